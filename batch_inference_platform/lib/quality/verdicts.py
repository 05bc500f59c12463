"""Each partition's latest validation, as recorded in the lake, and whether its rows may be
scored.

A validation of a partition commits its quarantine partition first, stamped with a
``validation_id`` and the verdict: ``passed``, ``failed`` (a blocking check) or ``error`` (the
features could not be read), with the reason and the files to blame. Only a partition that
passed then replaces its validated partition, stamped with the same id; a partition that did not
pass keeps its last validated version, which is no longer scored. Delta has no transaction
across two tables: the quarantine commit is the write-ahead record of the validated one. A run
killed between them leaves a ``passed`` quarantine whose id the validated partition does not
carry; the partition is refused until its validation is rerun (which rewrites both).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from batch_inference_platform.lib.lake.layout import DeploymentTables
from batch_inference_platform.lib.lake.lineage import PartitionCommit, latest_commits

VALIDATION_ID = "validation_id"
VERDICT = "validation"
REASON = "validation_reason"
FILES = "validation_files"
"""The data files to blame for an ``error`` verdict, as a JSON list."""
PASSED, FAILED, ERROR = "passed", "failed", "error"


@dataclass(frozen=True)
class ValidationState:
    """What the lake says about the latest validation of one partition."""

    key: str
    """The partition's key."""
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
        """Why the partition's validated rows must not be scored, or None if they may be."""
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


def validation_states(tables: DeploymentTables, keys: Iterable[str]) -> dict[str, ValidationState]:
    """The latest validation of each partition of ``keys`` of a deployment's tables (one log
    read per table)."""
    keys = list(keys)
    quarantine = latest_commits(tables.quarantine, keys)
    validated = latest_commits(tables.validated, keys)
    return {key: _state(key, quarantine.get(key), validated.get(key)) for key in keys}


def _state(
    key: str, quarantine: PartitionCommit | None, validated: PartitionCommit | None
) -> ValidationState:
    info = quarantine.info if quarantine else {}
    verdict = str(info[VERDICT]) if VERDICT in info else None
    finished = verdict != PASSED or (
        validated is not None and validated.info.get(VALIDATION_ID) == info.get(VALIDATION_ID)
    )
    return ValidationState(
        key=key,
        verdict=verdict,
        run_id=quarantine.run_id if quarantine else "",
        reason=str(info.get(REASON, "")),
        files=tuple(json.loads(info[FILES])) if info.get(FILES) else (),
        finished=finished,
    )
