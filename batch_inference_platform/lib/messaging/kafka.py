"""Plain Kafka through confluent-kafka: the same code talks to Apache Kafka and to Azure Event
Hubs' Kafka endpoint (SASL settings in ``client-config``, the password from the environment).

``KafkaPublisher`` sends with an idempotent producer and waits for every acknowledgement, so a
caller knows what the broker holds; ``read_batch`` reads by explicit partition offsets (no
consumer group), so a sensor can keep those offsets in its cursor and re-read deterministically.
librdkafka's own log lines go to the ``batch_inference_platform.lib.messaging.kafka`` logger.
"""

from __future__ import annotations

import heapq
import logging
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from batch_inference_platform.config import KafkaSettings

ConfigValue = str | int | bool
MESSAGE_TIMEOUT_MS = 30_000
"""Upper bound on how long the producer retries one message before reporting it failed."""
_log = logging.getLogger(__name__)
_PURGED = (KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT)


class MessagingError(RuntimeError):
    """Kafka could not be used: unreachable, refused a request, or misconfigured."""


class KafkaConfigError(MessagingError):
    """The Kafka settings cannot work (no bootstrap servers, an unset password variable)."""


class KafkaNotConfigured(KafkaConfigError):
    """No bootstrap servers are configured: messages wait (in the outbox) until they are."""


class PublishError(MessagingError):
    """Some messages were not acknowledged by the broker; the text names topics and reasons."""


@dataclass(frozen=True)
class Record:
    """One message read from ``topic``: where it is, its key, bytes and timestamp."""

    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes
    timestamp_ms: int | None


def client_config(kafka: KafkaSettings) -> dict[str, ConfigValue]:
    """Settings every client shares: servers, ``client-config`` and the SASL password."""
    if not kafka.bootstrap_servers.strip():
        raise KafkaNotConfigured("batch-inference.kafka.bootstrap-servers is empty")
    config: dict[str, ConfigValue] = {
        "bootstrap.servers": kafka.bootstrap_servers,
        **kafka.client_config,
    }
    if kafka.sasl_password_env:
        password = os.environ.get(kafka.sasl_password_env)
        if not password:
            raise KafkaConfigError(
                f"batch-inference.kafka.sasl-password-env names {kafka.sasl_password_env}, "
                "but that environment variable is not set"
            )
        config["sasl.password"] = password
    return config


def producer_config(kafka: KafkaSettings) -> dict[str, ConfigValue]:
    """An idempotent acks=all producer, tuned by batch-size, linger-ms and buffer-memory."""
    return {
        **client_config(kafka),
        "enable.idempotence": True,
        "acks": "all",
        "batch.size": kafka.batch_size,
        "linger.ms": kafka.linger_ms,
        "queue.buffering.max.kbytes": max(1, kafka.buffer_memory // 1024),
        "message.timeout.ms": MESSAGE_TIMEOUT_MS,
    }


class KafkaPublisher:
    """Sends (topic, key, value) messages and waits until the broker acknowledged them all."""

    def __init__(self, kafka: KafkaSettings, *, timeout_seconds: float = 10) -> None:
        self.timeout_seconds = timeout_seconds
        config: dict[str, Any] = producer_config(kafka)
        # Give up on a message when the caller does, so nothing is delivered after a failure.
        timeout_ms = max(1, int(timeout_seconds * 1000))
        config["message.timeout.ms"] = min(MESSAGE_TIMEOUT_MS, timeout_ms)
        config["linger.ms"] = min(kafka.linger_ms, config["message.timeout.ms"] - 1)
        config["error_cb"] = self._on_error
        config["logger"] = _log
        self._last_error: str | None = None
        self._closed = False
        self._producer = Producer(config)

    def _on_error(self, error: KafkaError) -> None:
        self._last_error = error.str()

    def publish(self, messages: Sequence[tuple[str, str, bytes]]) -> None:
        """Send ``messages`` in order; ``PublishError`` unless every one was acknowledged within
        ``timeout_seconds``. After a failure nothing of this call is left queued."""
        if not messages:
            return
        deadline = time.monotonic() + self.timeout_seconds
        self._last_error = None
        unreported: Counter[str] = Counter()
        reasons: list[str] = []
        acknowledged = 0

        def report(error: KafkaError | None, message: Message) -> None:
            nonlocal acknowledged
            topic = message.topic() or "?"
            unreported[topic] -= 1
            if error is None:
                acknowledged += 1
            elif error.code() not in _PURGED:
                reasons.append(f"{topic}: {error.str()}")

        try:
            for topic, key, value in messages:
                self._produce(topic, key, value, report, deadline)
                unreported[topic] += 1
        except PublishError:
            self._drop_queued()
            raise
        # The producer fails a message itself at message.timeout.ms; the grace lets it report.
        if self._producer.flush(max(0.0, deadline - time.monotonic()) + 1.0):
            late = [topic for topic, n in sorted(unreported.items()) if n > 0]
            self._drop_queued()
            reasons += [f"{t}: not acknowledged within {self.timeout_seconds:g}s" for t in late]
        if acknowledged < len(messages):
            shown = "; ".join(dict.fromkeys(reasons))  # distinct, in order
            last = f" (last client error: {self._last_error})" if self._last_error else ""
            raise PublishError(
                f"{len(messages) - acknowledged} of {len(messages)} messages not published: "
                f"{shown}{last}"
            )

    def _produce(self, topic: str, key: str, value: bytes, report: Any, deadline: float) -> None:
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, on_delivery=report)
                return
            except BufferError:  # the send buffer is full: let deliveries drain it
                if time.monotonic() > deadline:
                    raise PublishError(f"{topic}: producer buffer full") from None
                self._producer.poll(0.1)
            except KafkaException as error:
                raise PublishError(f"{topic}: {error.args[0].str()}") from None

    def _drop_queued(self) -> None:
        """Purge what is still queued or in flight (its delivery reports fire as failures)."""
        self._producer.purge()
        self._producer.flush(0)

    def close(self) -> None:
        """Drop anything unsent and release the producer (idempotent)."""
        if not self._closed:
            self._closed = True
            self._drop_queued()
            self._producer.close()

    def __enter__(self) -> KafkaPublisher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def ensure_topics(kafka: KafkaSettings, topics: list[str], partitions: int = 3) -> None:
    """Create the ``topics`` that do not exist yet, with ``partitions`` partitions each."""
    config: dict[str, Any] = {**client_config(kafka), "logger": _log}
    admin = AdminClient(config)
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=partitions) for topic in topics],
        operation_timeout=10,
        request_timeout=15,
    )
    problems = []
    for topic, future in futures.items():
        try:
            future.result()
        except KafkaException as error:
            if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                problems.append(f"{topic}: {error.args[0].str()}")
    if problems:
        raise MessagingError("cannot create topics: " + "; ".join(problems))


def read_batch(
    kafka: KafkaSettings,
    topic: str,
    offsets: dict[int, int],
    *,
    max_messages: int,
    timeout_seconds: float,
) -> tuple[list[Record], dict[int, int]]:
    """Up to ``max_messages`` records of ``topic`` from ``offsets`` (partition -> next offset;
    0 when absent), and the offsets after them.

    Partitions are assigned explicitly (no consumer group, nothing committed). Returns when
    every partition reached the end it had when the call started, or after ``timeout_seconds``.
    Records are merged across partitions by timestamp (then partition, offset), each partition
    in offset order, so the same offsets over the same topic give the same records. An offset
    beyond a partition's end (the topic was recreated) restarts that partition at its start.
    """
    consumer = Consumer(
        {
            **client_config(kafka),
            "group.id": "batch-inference-reader",  # required by the client; never joined
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            "logger": _log,
        }
    )
    try:
        deadline = time.monotonic() + timeout_seconds
        ends = _partition_ends(consumer, topic, offsets, max_messages, deadline)
        fetched = _fetch(consumer, topic, ends, deadline)
    finally:
        consumer.close()
    chosen = list(
        heapq.merge(*fetched.values(), key=lambda r: (r.timestamp_ms or 0, r.partition, r.offset))
    )[:max_messages]
    after = dict(offsets)
    for record in chosen:
        after[record.partition] = record.offset + 1
    return chosen, after


def _remaining(deadline: float) -> float:
    return max(0.1, deadline - time.monotonic())


def _partition_ends(
    consumer: Consumer, topic: str, offsets: dict[int, int], max_messages: int, deadline: float
) -> dict[int, tuple[int, int]]:
    """partition -> (first offset to read, offset to stop before) for partitions with news."""
    try:
        metadata = consumer.list_topics(topic, timeout=_remaining(deadline))
    except KafkaException as error:
        raise MessagingError(f"cannot read {topic}: {error.args[0].str()}") from None
    described = metadata.topics.get(topic)
    if described is None or described.error is not None:
        return {}  # no such topic (yet): nothing to read
    ends = {}
    for partition in sorted(described.partitions):
        try:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=_remaining(deadline)
            )
        except KafkaException as error:
            raise MessagingError(
                f"cannot read {topic}[{partition}]: {error.args[0].str()}"
            ) from None
        start = offsets.get(partition, 0)
        if start > high:
            _log.warning("%s[%d]: offset %d is beyond the end %d", topic, partition, start, high)
            start = low
        start = max(start, low)
        if start < high:
            ends[partition] = (start, min(high, start + max_messages))
    return ends


def _fetch(
    consumer: Consumer, topic: str, ends: dict[int, tuple[int, int]], deadline: float
) -> dict[int, list[Record]]:
    """Records of each partition from its start up to (not including) its stop offset."""
    fetched: dict[int, list[Record]] = {p: [] for p in ends}
    if not ends:
        return fetched
    consumer.assign([TopicPartition(topic, p, start) for p, (start, _) in ends.items()])
    active = set(ends)
    while active and time.monotonic() < deadline:
        # consume() waits for num_messages or its timeout: ask for exactly what is missing.
        missing = sum(ends[p][1] - ends[p][0] - len(fetched[p]) for p in active)
        wanted = max(1, min(missing, 1000))
        for message in consumer.consume(wanted, timeout=min(0.2, _remaining(deadline))):
            partition = message.partition()
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    active.discard(partition if partition is not None else -1)
                    continue
                raise MessagingError(f"cannot read {topic}[{partition}]: {error.str()}")
            offset = message.offset()
            if partition not in active or offset is None:
                continue
            if offset < ends[partition][1]:
                fetched[partition].append(_record(message, topic, partition, offset))
            if offset + 1 >= ends[partition][1]:
                active.discard(partition)
    return fetched


def _record(message: Message, topic: str, partition: int, offset: int) -> Record:
    kind, timestamp = message.timestamp()
    key = message.key()
    return Record(
        topic=topic,
        partition=partition,
        offset=offset,
        key=key.decode("utf-8", errors="replace") if isinstance(key, bytes) else key,
        value=message.value() or b"",
        timestamp_ms=None if kind == TIMESTAMP_NOT_AVAILABLE else timestamp,
    )
