"""The real-time integration with a real Kafka-protocol broker and the real Redis: a known
event stream gives exactly the expected window aggregates, insight messages and cache
contents; re-delivered events and re-runs change nothing; malformed events go to the dead
letter topic; late events land or are counted; a reader never sees a mix of two sets."""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
import redis

from batch_inference_platform.api.app import create_app
from batch_inference_platform.api.jobs import JobsService
from batch_inference_platform.lib.inbox.job_store import JobStore
from batch_inference_platform.lib.messaging.kafka import KafkaPublisher, ensure_topics, read_batch
from batch_inference_platform.lib.realtime.actions import next_best_action
from batch_inference_platform.lib.realtime.cache import RecommendationCache
from batch_inference_platform.lib.realtime.events import (
    CreditDecisionEvent,
    InsightMessage,
    JourneyEvent,
    TransactionEvent,
)
from batch_inference_platform.lib.realtime.tables import WINDOW_COLUMN
from batch_inference_platform.lib.tenants import load_tenants

from .conftest import DAY_A, Platform, PlatformFactory, check_evaluations, materializations
from .kafka_broker import KafkaBroker
from .servers import served
from .test_client_api import GLOBEX_KEY, Service, write_tenants

C1, C2, C3 = 1_000_001, 1_000_002, 1_000_003
H9 = dt.datetime(2026, 11, 28, 9, tzinfo=dt.UTC)
W9, W10 = "2026-11-28T09:00Z", "2026-11-28T10:00Z"


def _at(minutes: int) -> dt.datetime:
    return H9 + dt.timedelta(minutes=minutes)


def journey(n: int, customer: int, minutes: int, step: str) -> JourneyEvent:
    return JourneyEvent(
        event_id=f"j{n}",
        customer_id=customer,
        occurred_at=_at(minutes),
        step=step,  # type: ignore[arg-type]
        channel="web",
    )


def tx(n: int, customer: int, minutes: int, amount: float, declined: bool) -> TransactionEvent:
    return TransactionEvent(
        event_id=f"t{n}",
        customer_id=customer,
        occurred_at=_at(minutes),
        amount=amount,
        currency="EUR",
        declined=declined,
    )


STREAM = [
    journey(1, C1, 5, "page_view"),
    journey(2, C1, 7, "page_view"),
    journey(3, C1, 9, "application_started"),
    journey(4, C2, 10, "offer_viewed"),
    CreditDecisionEvent(
        event_id="d1", customer_id=C2, occurred_at=_at(20), decision="declined", limit_amount=0
    ),
    tx(1, C1, 62, 40.0, True),
    tx(2, C1, 63, 35.5, True),
    tx(3, C1, 70, 20.0, False),
    journey(5, C3, 65, "support_contact"),
    journey(6, C3, 75, "support_contact"),
]
EXPECTED = {
    (W9, C1): {"journey_events": 3, "applications_started": 1, "transactions": 0},
    (W9, C2): {"journey_events": 1, "offers_viewed": 1, "decisions_declined": 1},
    (W10, C1): {"transactions": 3, "declined_transactions": 2, "transaction_amount": 95.5},
    (W10, C3): {"journey_events": 2, "support_contacts": 2},
}


@dataclass
class Realtime:
    platform: Platform
    publisher: KafkaPublisher
    cache: RecommendationCache
    first: dg.ExecuteInProcessResult

    def publish(self, events: list, raw: tuple[tuple[str, bytes], ...] = ()) -> None:
        topics = self.platform.settings.application.realtime.topics
        by_type = {
            JourneyEvent: topics.journey_events,
            TransactionEvent: topics.transactions,
            CreditDecisionEvent: topics.credit_decisions,
        }
        messages = [
            (by_type[type(e)], str(e.customer_id), e.model_dump_json().encode()) for e in events
        ]
        self.publisher.publish([*messages, *((t, "junk", v) for t, v in raw)])

    def run(self) -> dg.ExecuteInProcessResult:
        return self.platform.defs.resolve_job_def("realtime_insights_job").execute_in_process(
            instance=self.platform.instance, raise_on_error=False
        )

    def topic(self, name: str) -> list:
        records, _ = read_batch(
            self.platform.settings.application.kafka.as_config(),
            name,
            {},
            max_messages=1000,
            timeout_seconds=3,
        )
        return records

    def aggregates(self) -> dict[tuple[str, int], dict]:
        location = self.platform.layout.realtime_aggregates
        dataset = location.open().to_pyarrow_dataset()
        rows = [r for b in dataset.to_batches() for r in b.to_pylist()]
        return {(r[WINDOW_COLUMN], r["customer_id"]): r for r in rows}


@pytest.fixture(scope="module")
def realtime(
    make_platform: PlatformFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Realtime]:
    prefix = f"bip-test-{uuid.uuid4().hex[:8]}"
    with KafkaBroker(tmp_path_factory.mktemp("rt_kafka")) as broker:
        platform = make_platform(
            "realtime",
            KAFKA__BOOTSTRAP_SERVERS=broker.bootstrap,
            REALTIME__REDIS_PREFIX=prefix,
            REALTIME__GRACE="10m",
        )
        assert platform.generate(DAY_A).success
        assert platform.train().success
        assert platform.score(DAY_A).success
        app = platform.settings.application
        topics = app.realtime.topics
        kafka = app.kafka.as_config()
        ensure_topics(
            kafka,
            [
                topics.journey_events,
                topics.transactions,
                topics.credit_decisions,
                topics.insights,
                topics.dead_letter,
            ],
        )
        client = redis.Redis.from_url(app.realtime.redis_url)
        cache = RecommendationCache(client, prefix, app.realtime.cache_ttl)
        with KafkaPublisher(kafka) as publisher:
            state = Realtime(platform, publisher, cache, None)  # type: ignore[arg-type]
            state.publish(
                STREAM,
                raw=(
                    (topics.transactions, b"{not json"),
                    (topics.journey_events, json.dumps({"schema_version": 1}).encode()),
                ),
            )
            state.first = state.run()
            yield state
        for key in client.scan_iter(match=f"{prefix}:*"):
            client.delete(key)


def test_the_stream_gives_exactly_the_expected_window_aggregates(realtime: Realtime) -> None:
    assert realtime.first.success
    aggregates = realtime.aggregates()
    assert set(aggregates) == set(EXPECTED)
    for key, expected in EXPECTED.items():
        for column, value in expected.items():
            assert aggregates[key][column] == value, (key, column)
    meta = materializations(realtime.first)["customer_activity_windows"]
    assert (meta["events_read"], meta["events_in_windows"], meta["dead_lettered"]) == (12, 10, 2)


def test_malformed_events_go_to_the_dead_letter_topic(realtime: Realtime) -> None:
    letters = [json.loads(r.value) for r in realtime.topic("realtime-dead-letter")]
    reasons = sorted(letter["reason"] for letter in letters)
    assert len(letters) == 2
    assert reasons[0].startswith("JourneyEvent: ") and "required field is missing" in reasons[0]
    assert reasons[1].startswith("TransactionEvent: invalid JSON")


def test_insights_are_published_and_cached_with_the_model_version(realtime: Realtime) -> None:
    insights = [
        InsightMessage.model_validate_json(r.value) for r in realtime.topic("batch-insights")
    ]
    assert sorted((i.window_start.hour, i.customer_id) for i in insights) == sorted(
        (9 if w == W9 else 10, c) for w, c in EXPECTED
    )
    cached = realtime.cache.current_many([C1, C2, C3])
    assert set(cached) == {C1, C2, C3}
    assert cached[C3].insight.next_best_action == "proactive_support_call"
    for found in cached.values():
        insight = found.insight
        assert (insight.model_name, insight.model_version) == (realtime.platform.model_name, 1)
        assert insight.risk_score is not None and 0 <= insight.risk_score <= 1
        assert insight.next_best_action == next_best_action(insight.activity, insight.risk_score)[0]
        assert found.cache_version == realtime.first.run_id
    assert cached[C1].insight.window_start == H9 + dt.timedelta(hours=1)  # the latest window
    meta = materializations(realtime.first)["customer_insights"]
    assert (meta["deployment"], meta["model_name"]) == ("credit_risk", "credit_risk_default")


def test_redelivered_events_and_reruns_change_nothing(realtime: Realtime) -> None:
    before = realtime.aggregates()
    rerun = realtime.run()  # nothing new on the topics
    assert rerun.success
    assert materializations(rerun)["customer_activity_windows"]["events_read"] == 0
    realtime.publish(STREAM)  # the same events delivered again (new offsets, same ids)
    replay = realtime.run()
    assert replay.success
    assert materializations(replay)["customer_activity_windows"]["events_read"] == 10
    assert realtime.aggregates() == {k: {**v} for k, v in before.items()} or _same_counts(
        realtime.aggregates(), before
    )


def _same_counts(after: dict, before: dict) -> bool:
    drop = {"window_start", "window_end"}
    return {k: {c: v for c, v in r.items() if c not in drop} for k, r in after.items()} == {
        k: {c: v for c, v in r.items() if c not in drop} for k, r in before.items()
    }


def test_late_events_land_within_grace_and_are_counted_after(realtime: Realtime) -> None:
    # Window 09 closes when the watermark (the latest event time) passes 10:00 + 10 min grace.
    realtime.publish([journey(7, C2, 90, "page_view")])  # 10:30 -> watermark 10:30
    assert realtime.run().success
    realtime.publish(
        [journey(8, C2, 50, "page_view"), journey(9, C2, 95, "offer_viewed")]
    )  # 09:50 is too late (window 09 closed at 10:10); 10:35 lands in window 10
    late = realtime.run()
    meta = materializations(late)["customer_activity_windows"]
    assert (meta["too_late"], meta["events_in_windows"]) == (1, 1)
    check = check_evaluations(late)["no_events_too_late"]
    assert check.passed is False and check.severity == dg.AssetCheckSeverity.WARN
    aggregates = realtime.aggregates()
    assert aggregates[(W9, C2)]["journey_events"] == 1  # unchanged
    assert aggregates[(W10, C2)]["journey_events"] == 2


def test_a_reader_during_a_swap_sees_one_whole_set(realtime: Realtime) -> None:
    base = realtime.cache.current_many([C1, C2, C3])
    sets = {
        version: [
            found.insight.model_copy(update={"next_best_action": version})
            for found in base.values()
        ]
        for version in ("set-a", "set-b")
    }
    stop, mixed, reads = threading.Event(), [], [0]

    def reader() -> None:
        while not stop.is_set():
            seen = realtime.cache.current_many([C1, C2, C3])
            actions = {f.insight.next_best_action for f in seen.values()}
            versions = {f.cache_version for f in seen.values()}
            version = next(iter(versions)) if len(versions) == 1 else ""
            expected = {version.rsplit("-", 1)[0]} if version.startswith("set-") else actions
            if not version or len(seen) != 3 or actions != expected:
                mixed.append((actions, versions, len(seen)))  # entries from two versions
            reads[0] += 1

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for thread in threads:
        thread.start()
    for n in range(60):
        version = ("set-a", "set-b")[n % 2]
        realtime.cache.publish(sets[version], f"{version}-{n}")
    stop.set()
    for thread in threads:
        thread.join()
    assert reads[0] > 0 and mixed == []


def test_the_read_path_serves_the_current_recommendation(
    realtime: Realtime, tmp_path: Path
) -> None:
    tenants = load_tenants(write_tenants(tmp_path / "tenants.yml"), "/lake")
    store = JobStore(
        f"sqlite:///{tmp_path / 'jobs.db'}",
        realtime.platform.settings.application.kafka.as_config().topics,
    )
    app = create_app(
        f"sqlite:///{tmp_path / 'inbox.db'}",
        jobs=JobsService(
            store,
            tenants,
            max_days=31,
            deployments={realtime.platform.deployment.name: realtime.platform.deployment},
        ),
        recommendations=realtime.cache,
    )
    with served(app) as url:
        service = Service(url, store, None, None, None)  # type: ignore[arg-type]
        status, view = service.call("GET", f"/api/v1/customers/{C3}/recommendation")
        assert status == 200, view
        assert view["next_best_action"] == realtime.cache.current(C3).insight.next_best_action  # type: ignore[union-attr]
        assert view["model_version"] == 1 and view["age_seconds"] >= 0
        assert service.call("GET", "/api/v1/customers/42/recommendation")[0] == 404
        assert service.call("GET", f"/api/v1/customers/{C3}/recommendation", key=None)[0] == 401
        status, problem = service.call(
            "GET", f"/api/v1/customers/{C3}/recommendation", key=GLOBEX_KEY
        )
        assert status == 403 and "may not read recommendations" in problem["detail"]
