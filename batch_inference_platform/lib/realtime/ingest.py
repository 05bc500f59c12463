"""Turn consumed records into window rows: parse, route malformed ones to the dead letter topic
with the reason, drop events too late for their window (counted), and deduplicate by event id
against what the windows already hold - so a replay counts nothing twice."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pyarrow as pa

from batch_inference_platform.lib.messaging.kafka import Record
from batch_inference_platform.lib.realtime.events import (
    CreditDecisionEvent,
    EventKind,
    JourneyEvent,
    MessageSchemaError,
    TransactionEvent,
    parse_event,
)
from batch_inference_platform.lib.realtime.tables import EVENTS_SCHEMA, WINDOW_COLUMN, window_id
from batch_inference_platform.lib.realtime.windows import is_too_late, window_start


@dataclass(frozen=True)
class DeadLetter:
    """A record that could not be used, and why (published to the dead letter topic)."""

    source: str
    key: str | None
    value: bytes
    reason: str


MAX_CLOCK_SKEW = dt.timedelta(minutes=5)
"""An event stamped further in the future than this is refused (it would close windows)."""


@dataclass
class Ingested:
    """What one batch of records yields."""

    rows: list[dict] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    too_late: int = 0
    late_within_grace: int = 0
    watermarks: dict[str, dt.datetime] = field(default_factory=dict)
    """Per topic, the latest event time it delivered."""

    @property
    def watermark(self) -> dt.datetime | None:
        """The most advanced topic's event time (for reporting)."""
        return max(self.watermarks.values()) if self.watermarks else None

    @property
    def windows(self) -> set[str]:
        return {row[WINDOW_COLUMN] for row in self.rows}


def ingest(
    records: Mapping[EventKind, Sequence[Record]],
    *,
    watermarks: Mapping[str, dt.datetime],
    window: dt.timedelta,
    grace: dt.timedelta,
    now: dt.datetime,
) -> Ingested:
    """Rows for the events in ``records``. Lateness is judged per topic, against the latest
    event time that topic delivered before this batch: a topic that lags (a backlog, an outage)
    never makes its events late because another topic moved on, and an event stamped in the
    future is refused rather than allowed to close windows."""
    before = dict(watermarks)
    result = Ingested(watermarks=dict(watermarks))
    for kind, batch in records.items():
        for record in batch:
            source = f"{record.topic}[{record.partition}]@{record.offset}"
            try:
                event = parse_event(kind, record.value)
            except MessageSchemaError as error:
                result.dead_letters.append(DeadLetter(source, record.key, record.value, str(error)))
                continue
            if event.occurred_at > now + MAX_CLOCK_SKEW:
                reason = f"occurred_at {event.occurred_at.isoformat()} is in the future"
                result.dead_letters.append(DeadLetter(source, record.key, record.value, reason))
                continue
            watermark = before.get(record.topic)
            if is_too_late(event.occurred_at, watermark, window, grace):
                result.too_late += 1
                continue
            start = window_start(event.occurred_at, window)
            if watermark is not None and start + window <= watermark:
                result.late_within_grace += 1
            result.rows.append(_row(kind, event, window_id(start), source))
            seen = result.watermarks.get(record.topic)
            if seen is None or event.occurred_at > seen:
                result.watermarks[record.topic] = event.occurred_at
    return result


def merge_events(existing: pa.Table, rows: list[dict]) -> pa.Table:
    """The windows' events after adding ``rows``: one row per event id (the first seen)."""
    new = pa.Table.from_pylist(rows, schema=EVENTS_SCHEMA)
    combined = pa.concat_tables([existing.select(EVENTS_SCHEMA.names).cast(EVENTS_SCHEMA), new])
    seen: set[str] = set()
    keep = []
    for index, event_id in enumerate(combined.column("event_id").to_pylist()):
        if event_id is not None and event_id not in seen:
            seen.add(event_id)
            keep.append(index)
    return combined.take(pa.array(keep, pa.int64()))


def _row(
    kind: EventKind,
    event: JourneyEvent | TransactionEvent | CreditDecisionEvent,
    window: str,
    source: str,
) -> dict:
    row = {
        WINDOW_COLUMN: window,
        "event_id": event.event_id,
        "kind": kind,
        "customer_id": event.customer_id,
        "occurred_at": event.occurred_at,
        "source": source,
    }
    if isinstance(event, JourneyEvent):
        row.update(step=event.step, channel=event.channel)
    elif isinstance(event, TransactionEvent):
        row.update(amount=event.amount, currency=event.currency, declined=event.declined)
    else:
        row.update(decision=event.decision, limit_amount=event.limit_amount)
    return row
