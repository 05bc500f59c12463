"""The client job store and its outbox on sqlite and a real PostgreSQL, and the relay that
publishes the outbox to a real broker (noida-db), through a broker outage."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from batch_inference_platform.lib.inbox.job_models import (
    IdempotencyConflict,
    InvalidTransition,
    JobNotFound,
    StoreUnavailable,
)
from batch_inference_platform.lib.inbox.job_store import JobStore
from batch_inference_platform.lib.inbox.job_tables import JOBS
from batch_inference_platform.lib.inbox.relay import OutboxRelay, backoff_seconds
from batch_inference_platform.lib.messaging.kafka import (
    KafkaPublisher,
    ensure_topics,
    read_batch,
)
from batch_inference_platform.lib.messaging.schemas import (
    ErrorMessage,
    InferenceRequestMessage,
    OutputMessage,
    StatusMessage,
    decode,
    encode,
)
from batch_inference_platform_tests.kafka_broker import KafkaBroker
from batch_inference_platform_tests.servers import postgres_database
from batch_inference_platform_tests.test_messaging import NOW, kafka_config, request
from batch_inference_platform_tests.test_outbox_poison import TopicWatcher

TOPICS = kafka_config("unused:9092").topics


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    if request.param == "sqlite":
        jobs = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}", TOPICS)
        yield jobs
        jobs.engine.dispose()
    else:
        with postgres_database() as url:
            jobs = JobStore(url, TOPICS)
            yield jobs
            jobs.engine.dispose()


def test_submit_stores_the_job_and_its_two_messages(store: JobStore) -> None:
    result = store.submit(request("job-1"), "key-1")
    assert result.created
    job = result.job
    assert (job.job_id, job.tenant, job.status, job.priority) == (
        "job-1",
        "acme",
        "accepted",
        "high",
    )
    assert job.request == request("job-1")
    assert store.get("acme", "job-1") == job

    pending = store.pending()
    assert [(row.topic, row.message_key) for row in pending] == [
        (TOPICS.input, "job-1"),
        (TOPICS.status, "job-1"),
    ]
    assert decode(InferenceRequestMessage, pending[0].payload) == request("job-1")
    status = decode(StatusMessage, pending[1].payload)
    assert (status.job_id, status.tenant, status.status) == ("job-1", "acme", "accepted")
    assert pending[0].id < pending[1].id and pending[0].attempts == 0


def test_replaying_a_key_returns_the_job_and_a_changed_request_conflicts(store: JobStore) -> None:
    first = store.submit(request("job-1"), "key-1").job
    replay = store.submit(request("job-2", submitted_at=NOW.replace(hour=11)), "key-1")
    assert (replay.created, replay.job) == (False, first)
    assert len(store.pending()) == 2, "a replay adds nothing to the outbox"

    with pytest.raises(IdempotencyConflict, match="idempotency key 'key-1' was already used"):
        store.submit(request("job-3", priority="urgent"), "key-1")
    # Keys are per tenant; no key means no deduplication.
    assert store.submit(request("job-4", tenant="globex"), "key-1").created
    assert store.submit(request("job-5"), None).created
    assert store.submit(request("job-6"), None).created
    with pytest.raises(IdempotencyConflict, match="job id 'job-6' is already used"):
        store.submit(request("job-6", tenant="globex"), None)
    assert len(store.pending()) == 8


def test_tenants_see_and_cancel_only_their_jobs(store: JobStore) -> None:
    for n in range(3):
        store.submit(request(f"acme-{n}"), None)
    store.submit(request("globex-0", tenant="globex"), None)

    assert store.get("globex", "acme-0") is None
    assert [job.job_id for job in store.list("globex")] == ["globex-0"]
    assert [job.job_id for job in store.list("acme")] == ["acme-2", "acme-1", "acme-0"]
    assert len(store.list("acme", limit=2)) == 2
    with pytest.raises(JobNotFound):
        store.cancel("globex", "acme-0")
    with pytest.raises(JobNotFound):
        store.cancel("acme", "nope")
    assert store.get("acme", "acme-0").status == "accepted"  # type: ignore[union-attr]

    canceled = store.cancel("acme", "acme-1")
    assert canceled.status == "canceled"
    assert [job.job_id for job in store.list("acme", status="canceled")] == ["acme-1"]
    assert [job.job_id for job in store.list("acme", status="accepted")] == ["acme-2", "acme-0"]


def test_the_stored_request_names_its_deployment_and_one_from_before_still_reads(
    store: JobStore,
) -> None:
    """A request stored at schema version 1 (before deployments were named) reads as one for
    credit_risk, the platform's only use case then; an unpartitioned one keeps no days."""
    whole = request("job-whole", deployment="snapshot", start_date=None, end_date=None)
    store.submit(whole, None)
    assert store.get("acme", "job-whole").request == whole  # type: ignore[union-attr]
    store.submit(request("job-old"), None)
    doc = json.loads(encode(request("job-old")))
    doc["schema_version"] = 1
    del doc["deployment"]
    with store.engine.begin() as connection:
        connection.execute(
            JOBS.update().where(JOBS.c.job_id == "job-old").values(request_json=json.dumps(doc))
        )
    job = store.get("acme", "job-old")
    assert job is not None and job.request == request("job-old")
    assert job.request.deployment == "credit_risk"


def test_terminal_statuses_are_final_and_repeats_change_nothing(store: JobStore) -> None:
    store.submit(request("job-1"), None)
    queued = store.update_status("job-1", "queued")
    started = store.update_status("job-1", "started", dagster_run_id="run-1", detail="step 1")
    assert (queued.status, started.status, started.dagster_run_id) == ("queued", "started", "run-1")
    assert started.updated_at >= started.created_at

    output = OutputMessage(
        job_id="job-1",
        tenant="acme",
        deployment="credit_risk",
        table="scores/daily",
        partitions=["2026-11-02"],
        rows=10,
        model_name="credit_risk_default",
        model_version=3,
        dagster_run_id="run-1",
        finished_at=NOW,
    )
    extra = [(TOPICS.output, "job-1", encode(output))]
    done = store.update_status("job-1", "succeeded", extra=extra)
    assert (done.status, done.dagster_run_id, done.detail) == ("succeeded", "run-1", None)
    rows = store.pending()
    assert [decode(StatusMessage, r.payload).status for r in rows if r.topic == TOPICS.status] == [
        "accepted",
        "queued",
        "started",
        "succeeded",
    ]
    assert [r.payload for r in rows if r.topic == TOPICS.output] == [encode(output)]
    last = decode(StatusMessage, rows[-2].payload)
    assert (last.status, last.dagster_run_id) == ("succeeded", "run-1")

    assert store.update_status("job-1", "succeeded", extra=extra) == done  # delivered twice
    assert len(store.pending()) == len(rows)
    for status in ("failed", "started", "canceled"):
        with pytest.raises(InvalidTransition, match="job job-1 is succeeded"):
            store.update_status("job-1", status)  # type: ignore[arg-type]
    with pytest.raises(InvalidTransition):
        store.cancel("acme", "job-1")
    with pytest.raises(JobNotFound):
        store.update_status("nope", "queued")

    store.submit(request("job-2"), None)
    assert store.cancel("acme", "job-2").status == "canceled"
    assert store.cancel("acme", "job-2").status == "canceled"  # again: no-op
    with pytest.raises(InvalidTransition, match="job job-2 is canceled; it cannot become started"):
        store.update_status("job-2", "started")


def test_concurrent_submits(store: JobStore) -> None:
    def submit(n: int) -> bool:
        return store.submit(request(f"job-{n}"), f"key-{n}").created

    with ThreadPoolExecutor(16) as pool:
        assert all(pool.map(submit, range(200)))
    assert len(store.list("acme", limit=1000)) == 200
    pending = store.pending(limit=1000)
    assert len(pending) == 400
    assert Counter(row.topic for row in pending) == {TOPICS.input: 200, TOPICS.status: 200}

    def same_key(n: int) -> tuple[bool, str]:
        result = store.submit(request(f"dup-{n}", tenant="globex"), "same-key")
        return result.created, result.job.job_id

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(same_key, range(20)))
    assert sum(created for created, _ in results) == 1
    assert len({job_id for _, job_id in results}) == 1
    assert len(store.list("globex")) == 1
    assert len(store.pending(limit=1000)) == 402


def test_pending_messages_go_out_tenant_by_tenant_each_job_in_order(store: JobStore) -> None:
    """A tenant's backlog delays another tenant by one message per turn, not by all of it."""
    for n in range(5):
        store.submit(request(f"acme-{n}"), None)
    store.submit(request("globex-0", tenant="globex"), None)
    store.update_status("acme-0", "queued")
    first = store.pending(limit=4)
    assert [(row.tenant, row.message_key, row.topic) for row in first] == [
        ("acme", "acme-0", TOPICS.input),
        ("globex", "globex-0", TOPICS.input),
        ("acme", "acme-0", TOPICS.status),
        ("globex", "globex-0", TOPICS.status),
    ]
    every = store.pending()
    assert len(every) == 13
    for job_id in {row.message_key for row in every}:
        ids = [row.id for row in every if row.message_key == job_id]
        assert ids == sorted(ids), f"{job_id}'s messages out of order"
    store.mark_published([row.id for row in first])
    assert [row.message_key for row in store.pending(limit=3)] == ["acme-1", "acme-1", "acme-2"]


def test_parking_a_message_keeps_it_and_fails_its_job_with_the_reason(store: JobStore) -> None:
    store.submit(request("job-1"), None)
    store.submit(request("job-2"), None)
    rows = store.pending()
    refused = next(r for r in rows if r.message_key == "job-1" and r.topic == TOPICS.input)

    result = store.park(refused.id, "MSG_SIZE_TOO_LARGE (Broker: Message size too large)")
    assert result is not None and result.failed_job is not None
    detail = (
        f"Kafka refused the job's request message ({len(refused.payload):,} bytes to "
        f"{TOPICS.input}): MSG_SIZE_TOO_LARGE (Broker: Message size too large)"
    )
    assert (result.failed_job.status, result.failed_job.detail) == ("failed", detail)
    assert store.get("acme", "job-1") == result.failed_job
    assert store.get("acme", "job-2").status == "accepted"  # type: ignore[union-attr]

    parked = store.parked()
    assert len(parked) == 1 and parked[0] == result.message
    assert (parked[0].outbox_id, parked[0].payload, parked[0].attempts) == (
        refused.id,
        refused.payload,
        1,
    )
    assert store.parked("job-2") == []
    pending = store.pending()
    assert refused.id not in {row.id for row in pending}
    failed = [r for r in pending if r.message_key == "job-1" and r.topic == TOPICS.status]
    assert [decode(StatusMessage, r.payload).status for r in failed] == ["accepted", "failed"]
    assert decode(StatusMessage, failed[-1].payload).detail == detail
    assert len(failed[-1].payload) < 1000, "the failure itself must be publishable"
    (error,) = [decode(ErrorMessage, r.payload) for r in pending if r.topic == TOPICS.errors]
    assert (error.job_id, error.tenant, error.error) == ("job-1", "acme", detail)

    assert store.park(refused.id, "again") is None  # not pending any more
    # A refused message of a finished job is parked; the job stays as it was.
    store.update_status("job-2", "succeeded")
    last = store.pending()[-1]
    result = store.park(last.id, "UNKNOWN_TOPIC_OR_PART (Broker: Unknown topic or partition)")
    assert result is not None and result.failed_job is None
    assert store.get("acme", "job-2").status == "succeeded"  # type: ignore[union-attr]
    assert [p.message_key for p in store.parked()] == ["job-2", "job-1"]


def test_an_unreachable_database_is_reported_as_unavailable() -> None:
    store = JobStore("postgresql+psycopg://postgres@127.0.0.1:9/nowhere", TOPICS)
    with pytest.raises(StoreUnavailable, match="job store unavailable: connection"):
        store.submit(request(), None)
    with pytest.raises(StoreUnavailable):
        store.get("acme", "job-1")


# ---------------------------------------------------------------------- relay


def test_relay_keeps_messages_through_a_broker_outage(tmp_path: Path) -> None:
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}", TOPICS)
    with KafkaBroker(tmp_path / "kafka") as broker:
        kafka = kafka_config(broker.bootstrap)
        ensure_topics(kafka, TOPICS.all())
        broker.stop()

        for n in range(5):
            assert store.submit(request(f"job-{n}"), f"key-{n}").created
        relay = OutboxRelay(store, lambda: KafkaPublisher(kafka, timeout_seconds=1.5))
        assert relay.publish_pending() == 0
        pending = store.pending()
        assert len(pending) == 10
        assert all(r.attempts == 1 and "not published" in (r.last_error or "") for r in pending)

        broker.start()
        assert relay.publish_pending() == 10
        assert store.pending() == []
        assert relay.publish_pending() == 0
        relay.close()

        records, _ = read_batch(kafka, TOPICS.input, {}, max_messages=100, timeout_seconds=10)
        job_ids = [decode(InferenceRequestMessage, r.value).job_id for r in records]
        assert sorted(job_ids) == [f"job-{n}" for n in range(5)]  # each exactly once
        assert [r.key for r in records] == job_ids
        statuses, _ = read_batch(kafka, TOPICS.status, {}, max_messages=100, timeout_seconds=10)
        assert len(statuses) == 5


def test_backoff_doubles_up_to_its_maximum() -> None:
    assert [backoff_seconds(n, 0.5, 30) for n in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert backoff_seconds(10_000, 0.5, 30) == 30


def test_relay_backs_off_through_an_outage_and_logs_once_per_change(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """While the broker is down the relay keeps retrying, ever more slowly, with one warning;
    when it is back, one line says so and everything goes out."""
    caplog.set_level(logging.DEBUG, logger="batch_inference_platform")
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}", TOPICS)
    with KafkaBroker(tmp_path / "kafka") as broker:
        kafka = kafka_config(broker.bootstrap)
        ensure_topics(kafka, TOPICS.all())
        broker.stop()
        store.submit(request("job-1"), None)
        attempts = threading.Semaphore(0)

        def publisher() -> KafkaPublisher:  # a new one per attempt after a failure
            attempts.release()
            return KafkaPublisher(kafka, timeout_seconds=1)

        relay = OutboxRelay(store, publisher)
        stop = _RecordingEvent()
        loop = threading.Thread(target=relay.run, args=(stop, 0.01, 0.1), daemon=True)
        loop.start()
        try:
            for n in range(3):
                assert attempts.acquire(timeout=10), f"attempt {n + 1} did not happen"
            broker.start()
            watcher = TopicWatcher(kafka, [TOPICS.input, TOPICS.status])
            try:
                watcher.until("the request and its status", lambda seen: all(seen.values()))
            finally:
                watcher.close()
        finally:
            stop.set()
            loop.join(timeout=10)
        assert not loop.is_alive()
    relay_log = [r for r in caplog.records if r.name.endswith("inbox.relay")]
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert warnings[0].name.endswith("inbox.relay")
    assert "2 of 2 messages not published" in warnings[0].getMessage()
    assert sum("still failing" in r.getMessage() for r in relay_log) >= 1  # at debug level
    recovered = [r for r in relay_log if "works again" in r.getMessage()]
    assert len(recovered) == 1 and recovered[0].levelno == logging.INFO
    assert store.pending() == [] and store.parked() == []
    assert stop.waits[:2] == [0.02, 0.04], "the pause after a failed attempt doubles"


class _RecordingEvent(threading.Event):
    """A stop event that remembers how long each wait was asked to last."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float | None] = []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        return super().wait(timeout)


def test_relay_loop_publishes_in_the_background(tmp_path: Path) -> None:
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}", TOPICS)
    with KafkaBroker(tmp_path / "kafka") as broker:
        kafka = kafka_config(broker.bootstrap)
        ensure_topics(kafka, TOPICS.all())
        stop = threading.Event()
        relay = OutboxRelay(store, lambda: KafkaPublisher(kafka))
        loop = threading.Thread(target=relay.run, args=(stop, 0.05), daemon=True)
        loop.start()
        try:
            store.submit(request("job-1"), None)
            store.update_status("job-1", "queued")
            deadline = time.monotonic() + 15
            while store.pending() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert store.pending() == []
        finally:
            stop.set()
            loop.join(timeout=10)
        assert not loop.is_alive()
        records, _ = read_batch(kafka, TOPICS.status, {}, max_messages=10, timeout_seconds=10)
        assert [decode(StatusMessage, r.value).status for r in records] == ["accepted", "queued"]


def test_relay_without_a_broker_configured_keeps_everything(tmp_path: Path) -> None:
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}", TOPICS)
    store.submit(request("job-1"), None)
    relay = OutboxRelay(store, lambda: KafkaPublisher(kafka_config("")))
    assert relay.publish_pending() == 0
    assert [row.attempts for row in store.pending()] == [0, 0]


def test_one_relay_publishes_at_a_time_so_every_message_goes_out_once(
    store: JobStore, tmp_path: Path
) -> None:
    """The API and the Dagster sensors each run a relay; the lease lets one publish at a time
    (each row once, in order), and a released lease passes to the other at once."""
    with KafkaBroker(tmp_path / "kafka-lease") as broker:
        kafka = kafka_config(broker.bootstrap)
        ensure_topics(kafka, TOPICS.all())
        for n in range(20):
            store.submit(request(f"job-{n}"), None)
        api, sensor = (OutboxRelay(store, lambda: KafkaPublisher(kafka)) for _ in range(2))
        assert api.publish_pending() == 40
        store.update_status("job-0", "queued")
        assert sensor.publish_pending() == 0  # the API relay holds the lease
        api.close()  # releases it
        assert sensor.publish_pending() == 1
        sensor.close()
        records, _ = read_batch(kafka, TOPICS.input, {}, max_messages=100, timeout_seconds=10)
        assert Counter(decode(InferenceRequestMessage, r.value).job_id for r in records) == {
            f"job-{n}": 1 for n in range(20)
        }
