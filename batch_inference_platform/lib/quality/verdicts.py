"""Each day's latest validation, as recorded in the lake, and whether its rows may be scored.

A validation of a day commits its quarantine partition first, stamped with a
``validation_id`` and the verdict: ``passed``, ``failed`` (a blocking check) or ``error`` (the
features could not be read), with the reason and the files to blame. Only a day that passed
then replaces its validated partition, stamped with the same id; a day that did not pass keeps
its last validated version, which is no longer scored. Delta has no transaction across two
tables: the quarantine commit is the write-ahead record of the validated one. A run killed
between them leaves a ``passed`` quarantine whose id the validated partition does not carry;
the day is refused until its validation is rerun (which rewrites both).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass

from batch_inference_platform.lib.lake.layout import LakeLayout
from batch_inference_platform.lib.lake.lineage import PartitionCommit, latest_commits

VALIDATION_ID = "validation_id"
VERDICT = "validation"
REASON = "validation_reason"
FILES = "validation_files"
"""The data files to blame for an ``error`` verdict, as a JSON list."""
PASSED, FAILED, ERROR = "passed", "failed", "error"


@dataclass(frozen=True)
class ValidationState:
    """What the lake says about the latest validation of one day."""

    day: dt.date
    verdict: str | None
    """``passed``, ``failed``, ``error``; None when none is recorded (validated before verdicts
    were recorded, or written by another tool)."""
    run_id: str
    """The run of the latest validation."""
    reason: str = ""
    files: tuple[str, ...] = ()
    """The feature files to blame for an ``error`` verdict."""
    finished: bool = True
    """False when a validation that passed committed its quarantine but not its validated
    rows (the run was killed between the two commits)."""

    @property
    def refusal(self) -> str | None:
        """Why the day's validated rows must not be scored, or None if they may be."""
        if self.verdict == FAILED:
            return (
                f"its latest validation (run {self.run_id}) failed a blocking check, so its "
                f"older validated rows are not scored: {self.reason}"
            )
        if self.verdict == ERROR:
            return (
                f"its latest validation (run {self.run_id}) could not read the features, so "
                f"its older validated rows are not scored: {self.reason}"
            )
        if not self.finished:
            return (
                f"its validation by run {self.run_id} did not finish (the quarantine was "
                "committed, the validated rows were not); materialize validated_features for "
                "it again"
            )
        return None


def validation_states(
    layout: LakeLayout, days: Iterable[dt.date]
) -> dict[dt.date, ValidationState]:
    """The latest validation of each of ``days`` (one log read per table)."""
    days = list(days)
    quarantine = latest_commits(layout.quarantine, days)
    validated = latest_commits(layout.validated, days)
    return {day: _state(day, quarantine.get(day), validated.get(day)) for day in days}


def _state(
    day: dt.date, quarantine: PartitionCommit | None, validated: PartitionCommit | None
) -> ValidationState:
    info = quarantine.info if quarantine else {}
    verdict = str(info[VERDICT]) if VERDICT in info else None
    finished = verdict != PASSED or (
        validated is not None and validated.info.get(VALIDATION_ID) == info.get(VALIDATION_ID)
    )
    return ValidationState(
        day=day,
        verdict=verdict,
        run_id=quarantine.run_id if quarantine else "",
        reason=str(info.get(REASON, "")),
        files=tuple(json.loads(info[FILES])) if info.get(FILES) else (),
        finished=finished,
    )
