"""The outbox relay: publishes the job store's pending messages to Kafka.

A message is marked published only after the broker acknowledged it, so a broker outage only
delays delivery: the relay retries with a growing pause (up to ``max_backoff_seconds``) and
logs a warning when publishing stops working and an info line when it works again - not one per
attempt. A message Kafka refuses for good (too large, invalid, no such topic) is parked in the
store with the reason, its job fails saying so (status topic, error topic, the job record), and
the relay goes on: one message, and so one tenant, never holds up the others. Pending messages
go out tenant by tenant in turns, each job's in order (``lib/inbox/outbox.py``).

Delivery is at least once: a message whose acknowledgement could not be recorded is sent
again, and a message refused with a batch is sent again alone, so consumers deduplicate (by job
id and status). One relay publishes at a time, whatever the number of processes running one (a
lease in the database).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType

from batch_inference_platform.lib.inbox.job_models import StoreUnavailable
from batch_inference_platform.lib.inbox.job_store import JobStore
from batch_inference_platform.lib.messaging.kafka import (
    DeliveryFailure,
    KafkaNotConfigured,
    KafkaPublisher,
    MessagingError,
)

_log = logging.getLogger(__name__)
LEASE_SECONDS = 30.0
"""How long a relay keeps the publishing lease without renewing it (it renews every round)."""
BATCH = 500


@dataclass(frozen=True)
class RelayRound:
    """What one round did: messages acknowledged, parked (refused for good), and left pending
    (``waiting``, with the ``problem``: a transient failure, or no Kafka configured)."""

    published: int = 0
    parked: int = 0
    waiting: int = 0
    problem: str | None = None


def backoff_seconds(failures: int, interval: float, maximum: float) -> float:
    """The pause before the next attempt after ``failures`` failed rounds in a row."""
    if failures <= 0:
        return interval
    return min(maximum, interval * 2 ** min(failures, 32))


class _Health:
    """Whether publishing works: a warning when it stops (or fails differently), an info line
    when it works again, debug in between."""

    def __init__(self) -> None:
        self.failures = 0
        self._kind: str | None = None
        self._since = 0.0

    def failed(self, kind: str, problem: str, *, exc_info: bool = False) -> None:
        if self.failures == 0:
            self._since = time.monotonic()
        self.failures += 1
        if kind != self._kind:
            self._kind = kind
            _log.warning("outbox: %s; retrying with backoff", problem, exc_info=exc_info)
        else:
            _log.debug("outbox: still failing (attempt %d): %s", self.failures, problem)

    def recovered(self) -> None:
        if self.failures:
            seconds = time.monotonic() - self._since
            _log.info(
                "outbox: publishing works again after %d failed attempts in %.0fs",
                self.failures,
                seconds,
            )
        self.failures, self._kind = 0, None


def _deliver(
    publisher: KafkaPublisher, messages: list[tuple[str, str, bytes]]
) -> list[DeliveryFailure | None]:
    """``publisher.deliver(messages)``, where a message refused with its record batch is sent
    again alone: it counts as refused only if it is refused alone too (another message of the
    batch may have been the cause)."""
    outcomes = publisher.deliver(messages)
    for index, outcome in enumerate(outcomes):
        if outcome is not None and outcome.batch and len(messages) > 1:
            outcomes[index] = publisher.deliver([messages[index]])[0]
    return outcomes


class OutboxRelay:
    """Moves ``store``'s outbox to Kafka through publishers made by ``publisher_factory``."""

    def __init__(self, store: JobStore, publisher_factory: Callable[[], KafkaPublisher]) -> None:
        self.store = store
        self._factory = publisher_factory
        self._publisher: KafkaPublisher | None = None
        self._lock = threading.Lock()
        self._id = uuid.uuid4().hex
        self._health = _Health()

    def publish_pending(self, limit: int = BATCH) -> int:
        """Publish up to ``limit`` pending messages; how many were published (see
        ``publish_round``)."""
        return self.publish_round(limit).published

    def publish_round(self, limit: int = BATCH) -> RelayRound:
        """Publish up to ``limit`` pending messages. Refused for good: parked, the job failed.
        Not acknowledged (broker down, timeout): recorded on the rows, which stay pending; so
        do all while Kafka is not configured. ``StoreUnavailable`` if the database is."""
        with self._lock:
            if not self.store.try_relay_lease(self._id, LEASE_SECONDS):
                self._health.recovered()
                return RelayRound()  # another relay is publishing
            rows = self.store.pending(limit)
            if not rows:
                self._health.recovered()
                return RelayRound()
            try:
                if self._publisher is None:
                    self._publisher = self._factory()
                publisher = self._publisher
            except KafkaNotConfigured as error:
                _log.debug("outbox: %d messages wait: %s", len(rows), error)
                return RelayRound(waiting=len(rows), problem=str(error))
            except MessagingError as error:  # settings that cannot work, e.g. a missing secret
                self.store.mark_failed([row.id for row in rows], f"not published: {error}")
                self._health.failed("config", f"{len(rows)} messages wait: {error}")
                return RelayRound(waiting=len(rows), problem=str(error))
            outcomes = _deliver(publisher, [(r.topic, r.message_key, r.payload) for r in rows])
            pairs = list(zip(rows, outcomes, strict=True))
            self.store.mark_published([row.id for row, outcome in pairs if outcome is None])
            parked = sum(
                self._park(row.id, outcome)
                for row, outcome in pairs
                if outcome is not None and outcome.permanent
            )
            waiting: defaultdict[str, list[int]] = defaultdict(list)
            for row, outcome in pairs:
                if outcome is not None and not outcome.permanent:
                    waiting[f"not published: {outcome.reason}"].append(row.id)
            for reason, ids in waiting.items():
                self.store.mark_failed(ids, reason)
            if waiting or publisher.broken:
                self._discard_publisher()  # a fresh producer next time: nothing stale queued
            published = sum(outcome is None for outcome in outcomes)
            left = sum(len(ids) for ids in waiting.values())
            if not waiting:
                self._health.recovered()
                return RelayRound(published, parked)
            reason = next(iter(waiting)).removeprefix("not published: ")
            problem = f"{left} of {len(rows)} messages not published: {reason}"
            self._health.failed("kafka", problem)
            return RelayRound(published, parked, left, problem)

    def _park(self, row_id: int, refusal: DeliveryFailure) -> bool:
        result = self.store.park(row_id, refusal.reason)
        if result is None:
            return False
        message, job = result.message, result.failed_job
        outcome = (
            f"job {job.job_id} of {job.tenant} failed"
            if job is not None
            else f"no unfinished job {message.message_key}"
        )
        _log.warning(
            "outbox: parked message %d to %s (%d bytes), refused for good: %s; %s",
            message.outbox_id,
            message.topic,
            len(message.payload),
            message.reason,
            outcome,
        )
        return True

    def run(
        self,
        stop: threading.Event,
        interval_seconds: float = 1.0,
        max_backoff_seconds: float = 30.0,
    ) -> None:
        """Publish until ``stop`` is set: at once while a full batch went out, otherwise every
        ``interval_seconds``; after a failure (Kafka or the database unavailable) the pause
        doubles up to ``max_backoff_seconds``."""
        try:
            while not stop.is_set():
                done = 0
                try:
                    result = self.publish_round(BATCH)
                    done = result.published + result.parked
                except StoreUnavailable as error:
                    self._health.failed("store", str(error))
                except Exception as error:
                    self._health.failed("error", f"relay failed: {error!r}", exc_info=True)
                if self._health.failures and not done:
                    stop.wait(
                        backoff_seconds(
                            self._health.failures, interval_seconds, max_backoff_seconds
                        )
                    )
                elif done < BATCH:
                    stop.wait(interval_seconds)
        finally:
            self.close()

    def _discard_publisher(self) -> None:
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            publisher.close()

    def close(self) -> None:
        """Release the Kafka producer and the publishing lease."""
        with self._lock:
            self._discard_publisher()
            with contextlib.suppress(StoreUnavailable):  # else it expires on its own
                self.store.release_relay_lease(self._id)

    def __enter__(self) -> OutboxRelay:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
