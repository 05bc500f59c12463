"""The webhook inbox: every accepted delivery, once, in arrival order, durably.

A delivery is committed before the receiver answers 2xx, so an acknowledged event is never
lost; its delivery id is unique, so a re-sent delivery (MLflow retries with the same id) adds
nothing. Readers page through it with a cursor (the last id they processed). SQLAlchemy keeps
one implementation for sqlite (local) and PostgreSQL (production).

On PostgreSQL concurrent inserts may commit out of id order, so a reader can move its cursor
past an id that commits a moment later. The model-update sensor tolerates that by design: an
inbox event only makes it look at the registry sooner, and it asks the registry every tick.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

_metadata = sa.MetaData()
INBOX = sa.Table(
    "webhook_inbox",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("source", sa.String(32), nullable=False),
    sa.Column("delivery_id", sa.String(200), nullable=False, unique=True),
    sa.Column("event", sa.String(100), nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
)


@dataclass(frozen=True)
class InboxEvent:
    """One accepted webhook delivery."""

    id: int
    source: str
    delivery_id: str
    event: str
    received_at: dt.datetime
    payload: dict[str, Any]


class WebhookInbox:
    """The inbox table in the database at ``url`` (created on first use)."""

    def __init__(self, url: str) -> None:
        self.engine = sa.create_engine(url)
        _metadata.create_all(self.engine)

    def append(self, *, source: str, delivery_id: str, event: str, payload: dict[str, Any]) -> bool:
        """Store a delivery; False if this delivery id was stored before (a replay)."""
        row = {
            "source": source,
            "delivery_id": delivery_id,
            "event": event,
            "received_at": dt.datetime.now(dt.UTC),
            "payload": json.dumps(payload, sort_keys=True),
        }
        try:
            with self.engine.begin() as connection:
                connection.execute(INBOX.insert().values(**row))
        except IntegrityError:
            return False
        return True

    def read_after(self, cursor: int, limit: int = 1000) -> list[InboxEvent]:
        """Deliveries with id greater than ``cursor``, oldest first."""
        query = INBOX.select().where(INBOX.c.id > cursor).order_by(INBOX.c.id).limit(limit)
        with self.engine.connect() as connection:
            rows = connection.execute(query).mappings().all()
        return [
            InboxEvent(
                id=row["id"],
                source=row["source"],
                delivery_id=row["delivery_id"],
                event=row["event"],
                received_at=row["received_at"],
                payload=json.loads(row["payload"]),
            )
            for row in rows
        ]
