"""The real-time Delta tables, partitioned by window: the deduplicated events, the per-customer
window aggregates and the insights.

Writes replace whole windows in one transaction. The events commit carries the consumed Kafka
offsets, the watermark and the windows it touched, so offsets advance exactly when events
land; aggregates remember the events version they were computed from, so a crash between the
two writes is repaired by the next run.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
from deltalake import CommitProperties, write_deltalake

from batch_inference_platform.lib.lake.tables import DeltaLocation

WINDOW_COLUMN = "window_id"
OFFSETS_KEY, WATERMARK_KEY, WINDOWS_KEY = "bip.offsets", "bip.watermark", "bip.windows"
EVENTS_VERSION_KEY = "bip.events_version"
_UTC = pa.timestamp("us", tz="UTC")

EVENTS_SCHEMA = pa.schema(
    [
        pa.field(WINDOW_COLUMN, pa.string(), nullable=False),
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("customer_id", pa.int64(), nullable=False),
        pa.field("occurred_at", _UTC, nullable=False),
        pa.field("step", pa.string()),
        pa.field("channel", pa.string()),
        pa.field("amount", pa.float64()),
        pa.field("currency", pa.string()),
        pa.field("declined", pa.bool_()),
        pa.field("decision", pa.string()),
        pa.field("limit_amount", pa.float64()),
        pa.field("source", pa.string(), nullable=False),
    ]
)
"""One row per distinct event (``event_id``), with where it was read (topic/partition@offset)."""


def window_id(start: dt.datetime) -> str:
    """The partition value of the window starting at ``start``, e.g. ``2026-11-28T09:00Z``."""
    return start.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%MZ")


def window_start_of(window: str) -> dt.datetime:
    return dt.datetime.strptime(window, "%Y-%m-%dT%H:%MZ").replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class ConsumerState:
    """Where consumption stands: next offset per topic and partition, and the watermark."""

    offsets: dict[str, dict[int, int]] = field(default_factory=dict)
    watermarks: dict[str, dt.datetime] = field(default_factory=dict)
    """Per topic, the latest event time consumed."""
    events_version: int | None = None


def consumer_state(events: DeltaLocation) -> ConsumerState:
    """The state the last events commit recorded (nothing consumed yet: empty)."""
    if not events.exists():
        return ConsumerState()
    for commit in events.open().history(limit=100):
        if OFFSETS_KEY in commit:
            offsets = {
                topic: {int(p): int(o) for p, o in parts.items()}
                for topic, parts in json.loads(commit[OFFSETS_KEY]).items()
            }
            marks = json.loads(commit.get(WATERMARK_KEY) or "{}")
            watermarks = {t: dt.datetime.fromisoformat(v) for t, v in marks.items()}
            return ConsumerState(offsets, watermarks, int(commit["version"]))
    return ConsumerState()


def read_windows(location: DeltaLocation, windows: Iterable[str]) -> pa.Table:
    """The rows of ``windows`` (an empty table if the table or windows do not exist)."""
    wanted = sorted(set(windows))
    if not location.exists() or not wanted:
        return pa.Table.from_batches([], schema=_schema_or_empty(location))
    dataset = location.open().to_pyarrow_dataset()
    batches = dataset.to_batches(filter=ds.field(WINDOW_COLUMN).isin(wanted))
    return pa.Table.from_batches(list(batches), schema=dataset.schema)


def replace_windows(
    location: DeltaLocation,
    windows: Iterable[str],
    rows: pa.Table,
    metadata: Mapping[str, str],
) -> int:
    """Replace ``windows`` with ``rows`` in one transaction; returns the new table version."""
    wanted = sorted(set(windows))
    quoted = ", ".join(f"'{w}'" for w in wanted)
    exists = location.exists()
    if not wanted and rows.num_rows:
        raise ValueError("rows without windows to replace")
    properties = CommitProperties(custom_metadata=dict(metadata))
    if not wanted:  # an empty append that only records the commit's metadata (offsets)
        write_deltalake(
            location.uri,
            rows,
            partition_by=[WINDOW_COLUMN],
            mode="append",
            storage_options=location.options,
            commit_properties=properties,
        )
    else:
        write_deltalake(
            location.uri,
            rows,
            partition_by=[WINDOW_COLUMN],
            mode="overwrite",
            predicate=f"{WINDOW_COLUMN} IN ({quoted})" if exists else None,
            storage_options=location.options,
            commit_properties=properties,
        )
    return location.open().version()


def windows_written_since(
    events: DeltaLocation, version: int | None, upto: int | None = None
) -> set[str]:
    """Windows that commits after ``version`` (all, if None) and up to ``upto`` touched."""
    if not events.exists():
        return set()
    touched: set[str] = set()
    for commit in events.open().history(limit=1000):
        if upto is not None and int(commit["version"]) > upto:
            continue
        if version is not None and int(commit["version"]) <= version:
            break
        if WINDOWS_KEY in commit:
            touched.update(json.loads(commit[WINDOWS_KEY]))
    return touched


def latest_metadata(location: DeltaLocation, key: str) -> Any:
    """The newest commit's value of ``key`` (None if absent)."""
    if not location.exists():
        return None
    for commit in location.open().history(limit=100):
        if key in commit:
            return commit[key]
    return None


def _schema_or_empty(location: DeltaLocation) -> pa.Schema:
    if location.exists():
        return location.open().to_pyarrow_dataset().schema
    return EVENTS_SCHEMA
