"""Lineage read back from the Delta log: which commit last wrote a partition, and from what.

Every platform write stamps its commit with ``partition`` (the partition's key),
``dagster_run_id`` and the versions it was made from (as commit fields; Spark as
``userMetadata`` JSON); this module finds the newest such commit for a partition. Commits are
read from the log files themselves, so each has its true version even while other writers commit
(``DeltaTable.history()`` numbers them from the version the table was loaded at, which is off
when newer commits exist).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from batch_inference_platform.lib.lake.log import commits_down_from
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
    location: DeltaLocation, key: str, *, as_of: int | None = None
) -> PartitionCommit | None:
    """The newest commit stamped with partition ``key`` (at or before version ``as_of`` if
    given), or None if the table never had the partition written."""
    return latest_commits(location, [key], as_of=as_of).get(key)


def latest_commits(
    location: DeltaLocation, keys: Iterable[str], *, as_of: int | None = None
) -> dict[str, PartitionCommit]:
    """``latest_commit`` for several partition keys from one read of the table's history."""
    wanted = set(keys)
    found: dict[str, PartitionCommit] = {}
    if not wanted or not location.exists():
        return found
    newest = location.open().version() if as_of is None else as_of
    for raw in commits_down_from(location.files(), newest, HISTORY_LIMIT):
        commit = _stamped(raw)
        key = str(commit.get("partition"))
        if key not in wanted or key in found:
            continue
        metrics = commit.get("operationMetrics") or {}
        rows = metrics.get("num_added_rows", metrics.get("numOutputRows", 0)) or 0
        found[key] = PartitionCommit(
            version=int(commit["version"]),
            rows=int(rows),
            run_id=str(commit.get("dagster_run_id", "")),
            info=commit,
        )
        if len(found) == len(wanted):
            break
    return found


def _stamped(commit: dict[str, Any]) -> dict[str, Any]:
    """The commit info with its stamp at the top level: delta-rs writes custom metadata there,
    Spark writers put it in ``userMetadata`` as a JSON string."""
    user = commit.get("userMetadata")
    if not isinstance(user, str) or not user.startswith("{"):
        return commit
    try:
        stamp = json.loads(user)
    except ValueError:
        return commit
    return {**commit, **stamp} if isinstance(stamp, dict) else commit
