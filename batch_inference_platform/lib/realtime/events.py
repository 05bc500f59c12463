"""The journey orchestrator's events (JSON, ``schema_version`` 1, keyed by customer id) and the
insight messages the platform publishes back."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from batch_inference_platform.lib.messaging.schemas import (
    MessageSchemaError,
    NonEmpty,
    UtcDatetime,
    decode,
)

EventKind = Literal["journey", "transaction", "decision"]


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = 1
    event_id: NonEmpty
    customer_id: int = Field(ge=0)
    occurred_at: UtcDatetime


class JourneyEvent(_Event):
    """A step of a customer's journey in the orchestrator."""

    step: Literal[
        "page_view",
        "application_started",
        "application_submitted",
        "offer_viewed",
        "support_contact",
    ]
    channel: Literal["web", "app", "branch", "call_center"]


class TransactionEvent(_Event):
    """A card or account transaction."""

    amount: float = Field(ge=0)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    declined: bool


class CreditDecisionEvent(_Event):
    """A credit decision made by the orchestrator's decision engine."""

    decision: Literal["approved", "declined", "referred"]
    limit_amount: float = Field(ge=0)


EVENT_TYPES: dict[EventKind, type[_Event]] = {
    "journey": JourneyEvent,
    "transaction": TransactionEvent,
    "decision": CreditDecisionEvent,
}


def parse_event(
    kind: EventKind, data: bytes
) -> JourneyEvent | TransactionEvent | CreditDecisionEvent:
    """The event in ``data``; ``MessageSchemaError`` naming what is wrong otherwise."""
    return decode(EVENT_TYPES[kind], data)  # type: ignore[return-value]


class InsightMessage(BaseModel):
    """A batch insight about one customer: risk, recent activity and the next best action."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = 1
    customer_id: int
    window_start: UtcDatetime
    window_end: UtcDatetime
    risk_score: float | None
    model_name: str
    model_version: int
    next_best_action: str
    reason: str
    activity: dict[str, float]
    generated_at: UtcDatetime


__all__ = [
    "CreditDecisionEvent",
    "EventKind",
    "InsightMessage",
    "JourneyEvent",
    "MessageSchemaError",
    "TransactionEvent",
    "parse_event",
]
