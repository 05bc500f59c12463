"""How a deployment's tables are partitioned: by day, by hour, or not at all.

A partition is named by its *key*, the string Dagster uses (``2026-11-01`` daily,
``2026-11-01-06:00`` hourly, ``all`` for an unpartitioned deployment). Every table of a
deployment is partitioned by the same column, holding the partition's value in each row.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import pyarrow as pa

WHOLE_TABLE = "all"
"""The one key of an unpartitioned deployment: each run replaces the whole table."""

_HOURLY_KEY = "%Y-%m-%d-%H:%M"


class PartitionKind(StrEnum):
    """How often a deployment's feature table gains a partition."""

    DAILY = "daily"
    HOURLY = "hourly"
    NONE = "none"


@dataclass(frozen=True)
class Partitioning:
    """The partition column and its cadence. ``column`` is None only for ``none``."""

    kind: PartitionKind
    column: str | None = None
    start: dt.datetime | None = None
    """The first partition (daily and hourly)."""

    def __post_init__(self) -> None:
        if (self.column is None) != (self.kind is PartitionKind.NONE):
            raise ValueError(f"partition kind {self.kind.value} with column {self.column!r}")

    @property
    def partitioned(self) -> bool:
        return self.kind is not PartitionKind.NONE

    @property
    def columns(self) -> list[str]:
        """The Delta ``partitionBy`` columns of every table of the deployment."""
        return [self.column] if self.column else []

    @property
    def arrow_type(self) -> pa.DataType:
        """The stored type of the partition column: a date, or an hour as a UTC timestamp."""
        if self.kind is PartitionKind.HOURLY:
            return pa.timestamp("us", tz="UTC")
        return pa.date32()

    def value(self, key: str) -> dt.date | dt.datetime:
        """The partition column's value in every row of partition ``key``."""
        if self.kind is PartitionKind.DAILY:
            return dt.date.fromisoformat(key)
        if self.kind is PartitionKind.HOURLY:
            return dt.datetime.strptime(key, _HOURLY_KEY).replace(tzinfo=dt.UTC)
        raise ValueError("an unpartitioned deployment has no partition values")

    def scalar(self, key: str) -> pa.Scalar:
        """``value(key)`` as an Arrow scalar of ``arrow_type``."""
        return pa.scalar(self.value(key), self.arrow_type)

    def delta_value(self, key: str) -> str:
        """The partition value as Delta's log and directory names write it."""
        value = self.value(key)
        if isinstance(value, dt.datetime):
            return value.strftime("%Y-%m-%d %H:%M:%S")
        return value.isoformat()

    def key_of(self, value: str | dt.date | dt.datetime) -> str:
        """The key of the partition a Delta partition value (or a row's value) belongs to."""
        if not self.partitioned:
            return WHOLE_TABLE
        if isinstance(value, str):
            value = (
                dt.datetime.fromisoformat(value)
                if len(value) > 10
                else dt.date.fromisoformat(value)
            )
        if self.kind is PartitionKind.DAILY:
            return (value.date() if isinstance(value, dt.datetime) else value).isoformat()
        if not isinstance(value, dt.datetime):
            value = dt.datetime.combine(value, dt.time())
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC)
        return value.strftime(_HOURLY_KEY)

    def next_key(self, key: str) -> str:
        """The key of the partition after ``key`` (for contiguous ranges)."""
        if not self.partitioned:
            return WHOLE_TABLE
        step = dt.timedelta(days=1) if self.kind is PartitionKind.DAILY else dt.timedelta(hours=1)
        return self.key_of(self.value(key) + step)

    def to_json(self) -> dict[str, Any]:
        """Kind, column and start as plain JSON (what a scoring request carries)."""
        return {
            "kind": self.kind.value,
            "column": self.column,
            "start": self.start.isoformat() if self.start else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Partitioning:
        start = data.get("start")
        return cls(
            PartitionKind(data["kind"]),
            data.get("column"),
            dt.datetime.fromisoformat(start) if start else None,
        )

    def keys(self, keys: list[str] | None) -> list[str]:
        """The partitions a run covers: Dagster's keys, or the whole table when unpartitioned."""
        return list(keys or []) if self.partitioned else [WHOLE_TABLE]
