"""Precomputed recommendations in Redis, swapped atomically.

Each publication writes a complete new set under its own version
(``<prefix>:reco:<version>:<customer>``, with the TTL) and then moves one pointer
(``<prefix>:reco:current``) with a single SET. A reader resolves the pointer once and reads
that version, so it sees the old set or the new one, never a mix. The version before the
previous is deleted after the swap (readers still on the previous one keep working).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import redis

from batch_inference_platform.lib.realtime.events import InsightMessage

KEEP_VERSIONS = 2


@dataclass(frozen=True)
class CachedRecommendation:
    """A customer's current recommendation, its model version and how old it is."""

    insight: InsightMessage
    cache_version: str
    age_seconds: float


class RecommendationCache:
    """The cache under ``prefix`` in one Redis database."""

    def __init__(self, client: redis.Redis, prefix: str, ttl: dt.timedelta) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl = ttl

    @property
    def _pointer(self) -> str:
        return f"{self.prefix}:reco:current"

    @property
    def _versions(self) -> str:
        return f"{self.prefix}:reco:versions"

    def _key(self, version: str, customer_id: int) -> str:
        return f"{self.prefix}:reco:{version}:{customer_id}"

    def publish(self, insights: Iterable[InsightMessage], version: str) -> int:
        """Write the complete set as ``version``, then make it current; returns its size."""
        seconds = int(self.ttl.total_seconds())
        pipe = self.client.pipeline(transaction=False)
        count = 0
        for insight in insights:
            pipe.set(self._key(version, insight.customer_id), insight.model_dump_json(), ex=seconds)
            count += 1
        pipe.execute()
        swap = self.client.pipeline(transaction=True)
        swap.set(self._pointer, version, ex=seconds)
        swap.lpush(self._versions, version)
        swap.execute()
        self._forget_old_versions()
        return count

    def current_version(self) -> str | None:
        value = self.client.get(self._pointer)
        return value.decode() if isinstance(value, bytes) else value  # type: ignore[return-value]

    def current(
        self, customer_id: int, now: dt.datetime | None = None
    ) -> CachedRecommendation | None:
        """The customer's recommendation in the current set, or None."""
        found = self.current_many([customer_id], now)
        return found.get(customer_id)

    def current_many(
        self, customer_ids: Sequence[int], now: dt.datetime | None = None
    ) -> dict[int, CachedRecommendation]:
        """Several customers, all from the same version of the set.

        A version's entries are written before it becomes current and deleted only once
        ``KEEP_VERSIONS`` newer ones were published; a reader that lost that race (the pointer
        moved on and entries are missing) reads again from the new current version."""
        if not customer_ids:
            return {}
        version, raw = "", []
        for _ in range(READ_ATTEMPTS):
            current = self.current_version()
            if current is None:
                return {}
            version = current
            raw: list = self.client.mget([self._key(version, c) for c in customer_ids])  # type: ignore[assignment]
            if all(value is not None for value in raw) or self.current_version() == version:
                break
        moment = now or dt.datetime.now(dt.UTC)
        found = {}
        for customer_id, value in zip(customer_ids, raw, strict=True):
            if value is None:
                continue
            insight = InsightMessage.model_validate(json.loads(value))  # type: ignore[arg-type]
            age = (moment - insight.generated_at).total_seconds()
            found[customer_id] = CachedRecommendation(insight, version, age)
        return found

    def _forget_old_versions(self) -> None:
        old = self.client.lrange(self._versions, KEEP_VERSIONS, -1)
        for raw in old:  # type: ignore[union-attr]
            version = raw.decode() if isinstance(raw, bytes) else raw
            keys = list(self.client.scan_iter(match=f"{self.prefix}:reco:{version}:*", count=1000))
            if keys:
                self.client.delete(*keys)
        self.client.ltrim(self._versions, 0, KEEP_VERSIONS - 1)


READ_ATTEMPTS = 5
"""Reads of a set that was deleted under a reader (see ``current_many``) before giving up."""


def connect(url: str, password: str | None = None) -> redis.Redis:
    """A Redis client (password from the environment, never from configuration files)."""
    return redis.Redis.from_url(url, password=password, socket_timeout=10)
