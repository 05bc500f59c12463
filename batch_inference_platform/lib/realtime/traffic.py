"""Realistic demo traffic from a journey orchestrator: journeys, transactions and credit
decisions of a set of customers over a time span, deterministic for a seed."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator

from batch_inference_platform.lib.features.synthetic import FIRST_CUSTOMER_ID
from batch_inference_platform.lib.realtime.events import (
    CreditDecisionEvent,
    EventKind,
    JourneyEvent,
    TransactionEvent,
)

Event = JourneyEvent | TransactionEvent | CreditDecisionEvent
JOURNEY_STEPS = [
    "page_view",
    "page_view",
    "page_view",
    "offer_viewed",
    "application_started",
    "application_submitted",
    "support_contact",
]
CHANNELS = ["web", "app", "branch", "call_center"]


def demo_events(
    *, customers: int, start: dt.datetime, hours: float, seed: int = 7, per_customer_hour: float = 3
) -> Iterator[tuple[EventKind, Event]]:
    """Events in time order; customer ids match the demo feature tables' customers."""
    rng = random.Random(seed)
    span = dt.timedelta(hours=hours)
    count = int(customers * hours * per_customer_hour)
    moments = sorted(start + span * rng.random() for _ in range(count))
    for n, moment in enumerate(moments):
        customer = FIRST_CUSTOMER_ID + rng.randrange(customers)
        event_id = f"evt-{seed}-{n}"
        roll = rng.random()
        if roll < 0.55:
            yield (
                "journey",
                JourneyEvent(
                    event_id=event_id,
                    customer_id=customer,
                    occurred_at=moment,
                    step=rng.choice(JOURNEY_STEPS),  # type: ignore[arg-type]
                    channel=rng.choice(CHANNELS),  # type: ignore[arg-type]
                ),
            )
        elif roll < 0.92:
            yield (
                "transaction",
                TransactionEvent(
                    event_id=event_id,
                    customer_id=customer,
                    occurred_at=moment,
                    amount=round(rng.lognormvariate(3.5, 1.0), 2),
                    currency="EUR",
                    declined=rng.random() < 0.08,
                ),
            )
        else:
            yield (
                "decision",
                CreditDecisionEvent(
                    event_id=event_id,
                    customer_id=customer,
                    occurred_at=moment,
                    decision=rng.choice(["approved", "approved", "declined", "referred"]),  # type: ignore[arg-type]
                    limit_amount=float(rng.choice([500, 1000, 2500, 5000])),
                ),
            )
