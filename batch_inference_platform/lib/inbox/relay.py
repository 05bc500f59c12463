"""The outbox relay: publishes the job store's pending messages to Kafka, in order.

A message is marked published only after the broker acknowledged it, so a broker outage only
delays delivery. Delivery is at least once: a batch that failed part-way, or whose
acknowledgement could not be recorded, is sent again, so consumers deduplicate (by job id and
status). Run one relay per database: two would publish the same rows twice.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from collections.abc import Callable
from types import TracebackType

from batch_inference_platform.lib.inbox.jobs import JobStore, StoreUnavailable
from batch_inference_platform.lib.messaging.kafka import (
    KafkaNotConfigured,
    KafkaPublisher,
    MessagingError,
)

_log = logging.getLogger(__name__)
LEASE_SECONDS = 30.0
"""How long a relay keeps the publishing lease without renewing it (it renews every round)."""


class OutboxRelay:
    """Moves ``store``'s outbox to Kafka through publishers made by ``publisher_factory``."""

    def __init__(self, store: JobStore, publisher_factory: Callable[[], KafkaPublisher]) -> None:
        self.store = store
        self._factory = publisher_factory
        self._publisher: KafkaPublisher | None = None
        self._lock = threading.Lock()
        self._id = uuid.uuid4().hex

    def publish_pending(self, limit: int = 500) -> int:
        """Publish up to ``limit`` pending messages in outbox order; how many were published.

        A failure to publish (broker down, messages refused) is recorded on the rows, which
        stay pending, and gives 0; so does a missing Kafka configuration."""
        with self._lock:
            if not self.store.try_relay_lease(self._id, LEASE_SECONDS):
                return 0  # another relay is publishing; it keeps the order
            rows = self.store.pending(limit)
            if not rows:
                return 0
            ids = [row.id for row in rows]
            try:
                if self._publisher is None:
                    self._publisher = self._factory()
                self._publisher.publish([(r.topic, r.message_key, r.payload) for r in rows])
            except KafkaNotConfigured as error:
                _log.debug("outbox: %d messages wait: %s", len(rows), error)
                return 0
            except MessagingError as error:
                self._discard_publisher()  # a fresh producer next time: nothing stale queued
                _log.warning("outbox: %d messages not published: %s", len(rows), error)
                self.store.mark_failed(ids, str(error))
                return 0
            self.store.mark_published(ids)
            return len(rows)

    def run(self, stop: threading.Event, interval_seconds: float = 1.0) -> None:
        """Publish until ``stop`` is set: at once while a full batch was published, otherwise
        every ``interval_seconds``. A database outage is logged and retried."""
        limit = 500
        try:
            while not stop.is_set():
                try:
                    published = self.publish_pending(limit)
                except StoreUnavailable as error:
                    _log.warning("outbox relay: %s", error)
                    published = 0
                except Exception:
                    _log.exception("outbox relay failed; retrying")
                    published = 0
                if published < limit:
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
