"""Plain Kafka through confluent-kafka: the same code talks to Apache Kafka and to Azure Event
Hubs' Kafka endpoint (SASL settings in ``client-config``, the password from the environment).

``KafkaPublisher`` sends with an idempotent producer and waits for every acknowledgement, so a
caller knows what the broker holds - per message, and whether a refusal is permanent (the same
message will never be accepted) or transient (retry later); ``read_batch`` reads by explicit
partition offsets (no consumer group), so a sensor can keep those offsets in its cursor and
re-read deterministically. librdkafka's own log lines go to the
``batch_inference_platform.lib.messaging.kafka`` logger; its broker connection failures (every
reconnect attempt while a broker is down) at debug level: the caller reports an outage once.
"""

from __future__ import annotations

import heapq
import logging
import os
import time
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

from batch_inference_platform.lib.messaging.settings import KafkaConfig

ConfigValue = str | int | bool
MESSAGE_TIMEOUT_MS = 30_000
"""Upper bound on how long the producer retries one message before reporting it failed."""
_log = logging.getLogger(__name__)
_PURGED = (KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT)

PERMANENT_ERRORS: frozenset[int] = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,  # larger than the producer's or the topic's limit
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_RECORD,
        KafkaError.INVALID_MSG_SIZE,
        KafkaError.INVALID_TIMESTAMP,
        KafkaError.UNKNOWN_TOPIC_OR_PART,  # the topic does not exist and is not auto-created
        KafkaError._UNKNOWN_TOPIC,
        KafkaError._UNKNOWN_PARTITION,
        KafkaError.TOPIC_EXCEPTION,  # an invalid topic name
        KafkaError.POLICY_VIOLATION,
    }
)
"""Refusals of a message itself: sending it again can never succeed. Everything else - a broker
down, a timeout, a leader election, a fatal producer state (a new producer fixes it) - is
transient. ``KafkaError.retriable()`` cannot decide this: confluent-kafka leaves it False on
delivery reports whatever the code."""
_TOPIC_ERRORS = frozenset(
    {
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._UNKNOWN_TOPIC,
        KafkaError._UNKNOWN_PARTITION,
        KafkaError.TOPIC_EXCEPTION,
    }
)


class MessagingError(RuntimeError):
    """Kafka could not be used: unreachable, refused a request, or misconfigured."""


class KafkaConfigError(MessagingError):
    """The Kafka settings cannot work (no bootstrap servers, an unset password variable)."""


class KafkaNotConfigured(KafkaConfigError):
    """No bootstrap servers are configured: messages wait (in the outbox) until they are."""


class PublishError(MessagingError):
    """Some messages were not acknowledged by the broker; the text names topics and reasons."""


@dataclass(frozen=True)
class DeliveryFailure:
    """Why one message was not acknowledged; ``permanent`` if sending it again cannot help.

    ``batch``: the broker refused the record batch the message was sent in (too large, an
    invalid record). Every message of that batch gets the refusal, so the message may be
    innocent: send it alone to know."""

    reason: str
    permanent: bool
    batch: bool = False


def is_permanent(error: KafkaError) -> bool:
    """The broker (or the client, before sending) refuses this message for good."""
    return error.code() in PERMANENT_ERRORS


def describe(error: KafkaError) -> str:
    """``NAME (text)``, e.g. ``MSG_SIZE_TOO_LARGE (Broker: Message size too large)``."""
    return f"{error.name()} ({error.str()})"


class _ClientLog:
    """librdkafka's log lines to ``_log``; broker connection failures (facility FAIL, logged
    at every reconnect attempt while a broker is down) at debug level."""

    def log(self, level: int, msg: str, *args: object) -> None:
        if args and args[0] == "FAIL":
            level = logging.DEBUG
        _log.log(level, msg, *args)


_CLIENT_LOG = _ClientLog()
_UNREPORTED = DeliveryFailure("no delivery report", permanent=False)


@dataclass(frozen=True)
class Record:
    """One message read from ``topic``: where it is, its key, bytes and timestamp."""

    topic: str
    partition: int
    offset: int
    key: str | None
    value: bytes
    timestamp_ms: int | None


def client_config(kafka: KafkaConfig) -> dict[str, ConfigValue]:
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


def producer_config(kafka: KafkaConfig) -> dict[str, ConfigValue]:
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

    def __init__(self, kafka: KafkaConfig, *, timeout_seconds: float = 10) -> None:
        self.timeout_seconds = timeout_seconds
        config: dict[str, Any] = producer_config(kafka)
        # Give up on a message when the caller does, so nothing is delivered after a failure.
        timeout_ms = max(1, int(timeout_seconds * 1000))
        config["message.timeout.ms"] = min(MESSAGE_TIMEOUT_MS, timeout_ms)
        config["linger.ms"] = min(kafka.linger_ms, config["message.timeout.ms"] - 1)
        # A topic that does not exist (and is not auto-created) is reported as such, permanently,
        # within the timeout - not as a message that timed out.
        config.setdefault(
            "topic.metadata.propagation.max.ms", max(1, config["message.timeout.ms"] // 2)
        )
        config["error_cb"] = self._on_error
        config["logger"] = _CLIENT_LOG
        self._last_error: str | None = None
        self._fatal: str | None = None
        self._closed = False
        self._producer = Producer(config)

    def _on_error(self, error: KafkaError) -> None:
        self._last_error = error.str()
        if error.fatal():
            self._fatal = error.str()

    @property
    def broken(self) -> str | None:
        """Why this producer cannot send any more (a fatal error): make a new one."""
        return self._fatal

    def publish(self, messages: Sequence[tuple[str, str, bytes]]) -> None:
        """Send ``messages`` in order; ``PublishError`` unless every one was acknowledged within
        ``timeout_seconds``. After a failure nothing of this call is left queued."""
        outcomes = self.deliver(messages)
        failed = [
            (topic, failure)
            for (topic, _, _), failure in zip(messages, outcomes, strict=True)
            if failure is not None
        ]
        if failed:
            shown = "; ".join(dict.fromkeys(f"{t}: {f.reason}" for t, f in failed))
            raise PublishError(f"{len(failed)} of {len(messages)} messages not published: {shown}")

    def deliver(self, messages: Sequence[tuple[str, str, bytes]]) -> list[DeliveryFailure | None]:
        """Send ``messages`` in order and wait up to ``timeout_seconds`` for the broker: for
        each message None if acknowledged, else why not. A message refused is reported and the
        others are still sent; after the call nothing of it is left queued."""
        deadline = time.monotonic() + self.timeout_seconds
        self._last_error = None
        outcomes: list[DeliveryFailure | None] = [_UNREPORTED] * len(messages)

        def report(index: int, error: KafkaError | None) -> None:
            if error is None:
                outcomes[index] = None
            elif error.code() not in _PURGED:
                permanent = is_permanent(error)
                batch = permanent and error.code() not in _TOPIC_ERRORS
                outcomes[index] = DeliveryFailure(describe(error), permanent, batch)

        for index, (topic, key, value) in enumerate(messages):
            outcome = self._produce(
                topic, key, value, lambda e, _m, i=index: report(i, e), deadline
            )
            if outcome is not None:
                outcomes[index] = outcome
        # The producer fails a message itself at message.timeout.ms; the grace lets it report.
        if self._producer.flush(max(0.0, deadline - time.monotonic()) + 1.0):
            self._drop_queued()  # purged messages report nothing: they stay unreported
        last = f" (last client error: {self._last_error})" if self._last_error else ""
        late = DeliveryFailure(f"not acknowledged within {self.timeout_seconds:g}s{last}", False)
        for index, outcome in enumerate(outcomes):
            if outcome is _UNREPORTED:
                outcomes[index] = late
            elif outcome is not None and not outcome.permanent and last:
                outcomes[index] = DeliveryFailure(outcome.reason + last, permanent=False)
        return outcomes

    def _produce(
        self, topic: str, key: str, value: bytes, report: Any, deadline: float
    ) -> DeliveryFailure | None:
        """Queue one message; why not, if the client refuses it before sending."""
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, on_delivery=report)
                return None
            except BufferError:  # the send buffer is full: let deliveries drain it
                if time.monotonic() > deadline:
                    return DeliveryFailure("producer buffer full", permanent=False)
                self._producer.poll(0.1)
            except KafkaException as error:
                refusal: KafkaError = error.args[0]
                if refusal.fatal():
                    self._fatal = refusal.str()
                return DeliveryFailure(describe(refusal), is_permanent(refusal))

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


def ensure_topics(
    kafka: KafkaConfig,
    topics: list[str],
    partitions: int = 3,
    config: dict[str, str] | None = None,
) -> None:
    """Create the ``topics`` that do not exist yet, with ``partitions`` partitions each and the
    topic ``config`` (e.g. ``{"max.message.bytes": "1048588"}``)."""
    admin_config: dict[str, Any] = {**client_config(kafka), "logger": _CLIENT_LOG}
    admin = AdminClient(admin_config)
    futures = admin.create_topics(
        [NewTopic(topic, num_partitions=partitions, config=config or {}) for topic in topics],
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
    kafka: KafkaConfig,
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
            "logger": _CLIENT_LOG,
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
