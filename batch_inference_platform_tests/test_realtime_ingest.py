"""Lateness is judged per topic, events from the future are refused, and the cached set is
each customer's newest insight within the TTL."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from batch_inference_platform.lib.lake.tables import DeltaLocation
from batch_inference_platform.lib.messaging.kafka import Record
from batch_inference_platform.lib.realtime.events import (
    InsightMessage,
    JourneyEvent,
    TransactionEvent,
)
from batch_inference_platform.lib.realtime.ingest import ingest
from batch_inference_platform.lib.realtime.insights import insights_table, latest_per_customer
from batch_inference_platform.lib.realtime.tables import replace_windows, window_id

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


def test_the_cached_set_is_each_customers_newest_insight_within_the_ttl(tmp_path: Path) -> None:
    location = DeltaLocation(str(tmp_path / "insights"))

    def insight(customer: int, start: dt.datetime, action: str) -> InsightMessage:
        return InsightMessage(
            customer_id=customer,
            window_start=start,
            window_end=start + HOUR,
            risk_score=0.1,
            model_name="m",
            model_version=1,
            next_best_action=action,
            reason="r",
            activity={},
            generated_at=start + HOUR,
        )

    old, recent = NOON - dt.timedelta(days=3), NOON - HOUR
    stored = [insight(1, old, "stale"), insight(2, old, "stale"), insight(1, recent, "kept")]
    for start in (old, recent):
        rows = [i for i in stored if i.window_start == start]
        replace_windows(location, [window_id(start)], insights_table(rows), {})
    pending = [insight(3, NOON, "new"), insight(1, NOON, "newer")]
    current = latest_per_customer(location, dt.timedelta(days=1), pending)
    assert {(i.customer_id, i.next_best_action) for i in current} == {(1, "newer"), (3, "new")}
    # Without pending insights, the stored ones within the day still serve.
    assert {
        (i.customer_id, i.next_best_action)
        for i in latest_per_customer(location, dt.timedelta(days=1))
    } == {(1, "kept")}
