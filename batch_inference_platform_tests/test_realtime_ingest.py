"""Lateness is judged per topic, and events from the future are refused."""

from __future__ import annotations

import datetime as dt

from batch_inference_platform.lib.messaging.kafka import Record
from batch_inference_platform.lib.realtime.events import JourneyEvent, TransactionEvent
from batch_inference_platform.lib.realtime.ingest import ingest

NOON = dt.datetime(2026, 11, 28, 12, tzinfo=dt.UTC)
HOUR, GRACE = dt.timedelta(hours=1), dt.timedelta(minutes=10)


def _record(topic: str, offset: int, event: JourneyEvent | TransactionEvent) -> Record:
    return Record(topic, 0, offset, str(event.customer_id), event.model_dump_json().encode(), 0)


def _journey(n: int, at: dt.datetime) -> JourneyEvent:
    return JourneyEvent(
        event_id=f"j{n}", customer_id=1, occurred_at=at, step="page_view", channel="web"
    )


def _tx(n: int, at: dt.datetime) -> TransactionEvent:
    return TransactionEvent(
        event_id=f"t{n}", customer_id=1, occurred_at=at, amount=1.0, currency="EUR", declined=False
    )


def test_a_lagging_topic_is_not_made_late_by_another() -> None:
    """journeys are at noon; transactions have a backlog from 09:00: their 09:30 event lands,
    while a journey from 10:00 is too late (its window closed at 11:10 by journey time)."""
    got = ingest(
        {
            "journey": [_record("journeys", 5, _journey(1, NOON - 2 * HOUR))],
            "transaction": [_record("transactions", 9, _tx(1, NOON - dt.timedelta(hours=2.5)))],
        },
        watermarks={"journeys": NOON, "transactions": NOON - 3 * HOUR},
        window=HOUR,
        grace=GRACE,
        now=NOON,
    )
    assert got.too_late == 1
    assert [row["event_id"] for row in got.rows] == ["t1"]
    assert got.watermarks == {"journeys": NOON, "transactions": NOON - dt.timedelta(hours=2.5)}


def test_an_event_from_the_future_is_dead_lettered_and_moves_nothing() -> None:
    future = NOON + dt.timedelta(hours=6)
    got = ingest(
        {"journey": [_record("journeys", 1, _journey(1, future))]},
        watermarks={"journeys": NOON},
        window=HOUR,
        grace=GRACE,
        now=NOON,
    )
    (letter,) = got.dead_letters
    assert letter.reason == f"occurred_at {future.isoformat()} is in the future"
    assert got.rows == [] and got.watermarks == {"journeys": NOON}
