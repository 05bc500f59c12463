"""Issue 15: one tenant's message that Kafka refuses for good must not stop delivery for all.

On a real broker (noida-db) with the job store on sqlite and PostgreSQL: tenant acme submits a
job whose request message is larger than Kafka accepts (the limit is made small here - on the
topic, refused by the broker, or on the producer, refused before sending - instead of sending
megabytes), between jobs of tenant globex. The relay parks acme's message with the reason,
fails acme's job saying so (job record, API view, status and error topics), publishes every
globex message before and after it, and keeps running; the log gets one warning, not a flood.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from batch_inference_platform.api.jobs import JobView
from batch_inference_platform.lib.inbox.job_store import JobStore
from batch_inference_platform.lib.inbox.relay import OutboxRelay
from batch_inference_platform.lib.messaging.kafka import KafkaPublisher, ensure_topics
from batch_inference_platform.lib.messaging.schemas import (
    ErrorMessage,
    InferenceRequestMessage,
    StatusMessage,
    decode,
)
from batch_inference_platform.lib.messaging.settings import KafkaConfig
from batch_inference_platform.lib.messaging.topics import Topics
from batch_inference_platform_tests.kafka_broker import KafkaBroker
from batch_inference_platform_tests.servers import postgres_database
from batch_inference_platform_tests.test_messaging import kafka_config, request

LIMIT = 4000
"""Bytes per message the broker (or producer) accepts in these tests; a request is ~400."""
TIMEOUT = 20.0


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    with KafkaBroker(tmp_path_factory.mktemp("kafka-poison") / "data") as running:
        yield running


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'jobs.db'}"
    else:
        with postgres_database() as url:
            yield url


Seen = dict[str, list[bytes]]


class TopicWatcher:
    """Reads every partition of ``topics`` from its beginning as messages arrive (no consumer
    group)."""

    def __init__(self, kafka: KafkaConfig, topics: list[str]) -> None:
        self.seen: Seen = {topic: [] for topic in topics}
        self._consumer = Consumer(
            {
                "bootstrap.servers": kafka.bootstrap_servers,
                "group.id": f"watcher-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
            }
        )
        metadata = self._consumer.list_topics(timeout=TIMEOUT).topics
        self._consumer.assign(
            [
                TopicPartition(topic, partition, OFFSET_BEGINNING)
                for topic in topics
                for partition in metadata[topic].partitions
            ]
        )

    def until(self, what: str, condition: Callable[[Seen], bool]) -> Seen:
        """Consume until ``condition`` holds for everything seen so far (or fail at TIMEOUT)."""
        deadline = time.monotonic() + TIMEOUT
        while not condition(self.seen):
            if time.monotonic() > deadline:
                raise AssertionError(f"not seen within {TIMEOUT:g}s: {what}")
            message = self._consumer.poll(0.5)
            if message is None or message.error() is not None:
                continue
            self.seen[message.topic() or ""].append(message.value() or b"")
        return self.seen

    def close(self) -> None:
        self._consumer.close()


def _requests(seen: Seen, topics: Topics) -> list[str]:
    return [decode(InferenceRequestMessage, v).job_id for v in seen[topics.input]]


def _statuses(seen: Seen, topics: Topics, job_id: str) -> list[StatusMessage]:
    messages = [decode(StatusMessage, v) for v in seen[topics.status]]
    return [m for m in messages if m.job_id == job_id]


@pytest.mark.parametrize("refused_by", ["broker", "producer"])
def test_a_message_kafka_refuses_for_good_is_parked_and_fails_only_its_job(
    broker: KafkaBroker, store_url: str, refused_by: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    prefix = f"poison-{uuid.uuid4().hex[:8]}"
    topics = Topics(f"{prefix}-in", f"{prefix}-out", f"{prefix}-status", f"{prefix}-errors")
    limit = {"max.message.bytes": str(LIMIT)}
    producer_limit = {"message.max.bytes": str(LIMIT)} if refused_by == "producer" else {}
    kafka = kafka_config(broker.bootstrap, **{"client-config": producer_limit})
    # One partition: the oversized message shares record batches with the others.
    ensure_topics(kafka, topics.all(), partitions=1, config=limit if refused_by == "broker" else {})
    store = JobStore(store_url, topics)
    globex = [f"globex-{n}" for n in range(6)]
    for job_id in globex[:3]:
        store.submit(request(job_id, tenant="globex"), None)
    huge = request("acme-huge", output_table="scores/" + "x" * (2 * LIMIT))
    store.submit(huge, None)
    for job_id in globex[3:]:
        store.submit(request(job_id, tenant="globex"), None)

    watcher = TopicWatcher(kafka, [topics.input, topics.status, topics.errors])
    relay = OutboxRelay(store, lambda: KafkaPublisher(kafka, timeout_seconds=5))
    stop = threading.Event()
    loop = threading.Thread(target=relay.run, args=(stop, 0.05), daemon=True)
    loop.start()
    try:
        seen = watcher.until(
            "acme's job failed on the status topic and globex's requests",
            lambda s: (
                any(m.status == "failed" for m in _statuses(s, topics, "acme-huge"))
                and set(globex) <= set(_requests(s, topics))
            ),
        )
        # The relay goes on: a job submitted now is published too.
        store.submit(request("globex-later", tenant="globex"), None)
        seen = watcher.until(
            "the later job's request and status",
            lambda s: (
                "globex-later" in _requests(s, topics)
                and bool(_statuses(s, topics, "globex-later"))
            ),
        )
        assert loop.is_alive()
    finally:
        stop.set()
        loop.join(timeout=10)
        watcher.close()
    assert not loop.is_alive()

    # globex: every request exactly once (those refused in a batch with acme's were sent again
    # alone, after the others), and nothing of acme's oversized one.
    assert sorted(_requests(seen, topics)) == [*globex, "globex-later"]
    for job_id in globex:
        assert [m.status for m in _statuses(seen, topics, job_id)] == ["accepted"]
        assert store.get("globex", job_id).status == "accepted"  # type: ignore[union-attr]

    # acme's message is parked with the reason, not lost.
    parked = store.parked()
    assert [(p.message_key, p.topic) for p in parked] == [("acme-huge", topics.input)]
    assert "MSG_SIZE_TOO_LARGE" in parked[0].reason
    assert decode(InferenceRequestMessage, parked[0].payload) == huge

    # acme's job failed with the reason: job record, API view, status and error topics.
    job = store.get("acme", "acme-huge")
    assert job is not None and job.status == "failed"
    assert job.detail is not None
    assert job.detail.startswith("Kafka refused the job's request message (")
    assert f"bytes to {topics.input}): MSG_SIZE_TOO_LARGE" in job.detail
    view = JobView.of(job)
    assert (view.status, view.detail) == ("failed", job.detail)
    statuses = _statuses(seen, topics, "acme-huge")
    assert [(m.status, m.detail) for m in statuses] == [("accepted", None), ("failed", job.detail)]
    errors = [decode(ErrorMessage, v) for v in seen[topics.errors]]
    assert [(e.job_id, e.tenant, e.error) for e in errors] == [("acme-huge", "acme", job.detail)]
    assert store.pending() == []

    # One warning, for the parked message - not one per attempt.
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "parked message" in warnings[0].getMessage()
    assert "job acme-huge of acme failed" in warnings[0].getMessage()
    store.engine.dispose()
