"""The outbox table: messages queued in the transaction that made them, until the relay
(``lib/inbox/relay.py``) has them acknowledged by Kafka. Each function works in the caller's
transaction (``connection``)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa

from batch_inference_platform.lib.inbox.job_db import utc
from batch_inference_platform.lib.inbox.job_models import OutboxRow
from batch_inference_platform.lib.inbox.job_tables import OUTBOX

MAX_ERROR_CHARS = 4000


def append(
    connection: sa.Connection, topic: str, key: str, payload: bytes, at: dt.datetime
) -> None:
    """Queue one message."""
    row = {"topic": topic, "message_key": key, "payload": payload, "created_at": at}
    connection.execute(OUTBOX.insert().values(**row, attempts=0))


def pending(connection: sa.Connection, limit: int) -> list[OutboxRow]:
    """Up to ``limit`` unpublished messages, oldest first."""
    query = (
        OUTBOX.select().where(OUTBOX.c.published_at.is_(None)).order_by(OUTBOX.c.id).limit(limit)
    )
    return [
        OutboxRow(
            id=row["id"],
            topic=row["topic"],
            message_key=row["message_key"],
            payload=bytes(row["payload"]),
            created_at=utc(row["created_at"]),
            published_at=None,
            attempts=row["attempts"],
            last_error=row["last_error"],
        )
        for row in connection.execute(query).mappings()
    ]


def mark_published(connection: sa.Connection, ids: Sequence[int], at: dt.datetime) -> None:
    """The broker acknowledged these messages."""
    if ids:
        connection.execute(OUTBOX.update().where(OUTBOX.c.id.in_(ids)).values(published_at=at))


def mark_failed(connection: sa.Connection, ids: Sequence[int], error: str) -> None:
    """Publishing these messages failed with ``error``; they stay pending."""
    if ids:
        connection.execute(
            OUTBOX.update()
            .where(OUTBOX.c.id.in_(ids))
            .values(attempts=OUTBOX.c.attempts + 1, last_error=error[:MAX_ERROR_CHARS])
        )
