"""A promotion: one move of a model's serving alias, with an identity of its own.

The identity is what moved (model, alias, version) and when: the event time of the webhook
delivery that reported the move, or, when polling found it first, the time it was seen. Two
moves to the same version - a rollback v1 -> v2 -> v1 - are two promotions; one move reported
twice (a re-sent delivery, a second tick) is one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from batch_inference_platform.lib.inbox.store import InboxEvent

ALIAS_EVENTS = frozenset({"model_version_alias.created", "REGISTERED_MODEL_ALIAS_SET"})
"""Deliveries that report an alias move (MLflow OSS, Databricks)."""


@dataclass(frozen=True)
class Promotion:
    """``model@alias`` moved to ``version`` at ``moved_at`` (reported by ``delivery``, if any)."""

    model: str
    alias: str
    version: int
    moved_at: dt.datetime
    delivery: str | None = None

    @property
    def key(self) -> str:
        """The promotion's identity as text: ``model@alias=vN@<UTC time to the millisecond>``."""
        moment = self.moved_at.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%S.%f")[:-3] + "Z"
        return f"{self.model}@{self.alias}=v{self.version}@{moment}"

    @property
    def source(self) -> str:
        """Who reported the move: a webhook delivery, or registry polling."""
        return f"webhook delivery {self.delivery}" if self.delivery else "registry polling"

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "alias": self.alias,
            "version": self.version,
            "moved_at": self.moved_at.isoformat(),
            "delivery": self.delivery,
        }

    @staticmethod
    def from_json(value: dict[str, Any]) -> Promotion:
        return Promotion(
            model=value["model"],
            alias=value["alias"],
            version=int(value["version"]),
            moved_at=dt.datetime.fromisoformat(value["moved_at"]),
            delivery=value.get("delivery"),
        )


def reported_move(
    events: Iterable[InboxEvent], model: str, alias: str, version: int
) -> Promotion | None:
    """The promotion the newest delivery among ``events`` reports for ``model@alias`` moving
    to ``version`` (None if no delivery reports that move)."""
    found = None
    for event in events:
        if event.event not in ALIAS_EVENTS:
            continue
        data = event.payload.get("data", event.payload)
        if not isinstance(data, dict):
            continue
        name = data.get("name", data.get("model_name"))
        if name != model or data.get("alias") != alias or str(data.get("version")) != str(version):
            continue
        found = Promotion(model, alias, version, _event_time(event), event.delivery_id)
    return found


def _event_time(event: InboxEvent) -> dt.datetime:
    """When the registry says the event happened (else when the receiver stored it)."""
    stamp = event.payload.get("timestamp", event.payload.get("event_timestamp"))
    try:
        if isinstance(stamp, str):
            moment = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
            return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
        if isinstance(stamp, int | float) and not isinstance(stamp, bool):
            seconds = stamp / 1000 if stamp > 10**11 else stamp  # Databricks: milliseconds
            return dt.datetime.fromtimestamp(seconds, dt.UTC)
    except (ValueError, OverflowError, OSError):
        pass
    received = event.received_at
    return received if received.tzinfo else received.replace(tzinfo=dt.UTC)
