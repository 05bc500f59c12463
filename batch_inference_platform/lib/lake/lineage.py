"""Lineage read back from the Delta log: which commit last wrote a partition, and from what.

Every platform write stamps its commit with ``partition``, ``dagster_run_id`` and the versions
it was made from; this module finds the newest such commit for a partition.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from batch_inference_platform.lib.lake.tables import DeltaLocation

HISTORY_LIMIT = 1000
"""How many recent commits are searched for a partition's latest write."""


@dataclass(frozen=True)
class PartitionCommit:
    """The newest commit that wrote one partition, with the lineage stamped on it."""

    version: int
    rows: int
    run_id: str
    info: dict[str, Any]

    def number(self, key: str) -> int | None:
        value = self.info.get(key)
        return int(value) if value not in (None, "") else None


def latest_commit(
    location: DeltaLocation, day: dt.date, *, as_of: int | None = None
) -> PartitionCommit | None:
    """The newest commit stamped with ``day`` (at or before version ``as_of`` if given), or
    None if the table never had the partition written."""
    if not location.exists():
        return None
    for commit in location.open().history(limit=HISTORY_LIMIT):
        if as_of is not None and int(commit["version"]) > as_of:
            continue
        if commit.get("partition") == day.isoformat():
            metrics = commit.get("operationMetrics") or {}
            return PartitionCommit(
                version=int(commit["version"]),
                rows=int(metrics.get("num_added_rows", 0)),
                run_id=str(commit.get("dagster_run_id", "")),
                info=commit,
            )
    return None
