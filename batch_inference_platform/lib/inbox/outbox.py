"""The outbox table: messages queued in the transaction that made them, until the relay
(``lib/inbox/relay.py``) has them acknowledged by Kafka - or parks them, when Kafka refuses one
for good. Each function works in the caller's transaction (``connection``).

Pending messages are handed out tenant by tenant in turns (the oldest message of every tenant,
then the second oldest of each...), so a tenant with a large backlog delays another tenant's
messages by one message per turn, not by its whole backlog. Each tenant's own messages - and so
each job's - keep their order.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa

from batch_inference_platform.lib.inbox.job_db import utc
from batch_inference_platform.lib.inbox.job_models import OutboxRow, ParkedMessage
from batch_inference_platform.lib.inbox.job_tables import JOBS, OUTBOX, OUTBOX_PARKED

MAX_ERROR_CHARS = 4000


def append(
    connection: sa.Connection, topic: str, key: str, payload: bytes, at: dt.datetime
) -> None:
    """Queue one message."""
    row = {"topic": topic, "message_key": key, "payload": payload, "created_at": at}
    connection.execute(OUTBOX.insert().values(**row, attempts=0))


def pending(connection: sa.Connection, limit: int) -> list[OutboxRow]:
    """Up to ``limit`` unpublished messages: tenants in turns, each tenant's oldest first."""
    tenant = sa.func.coalesce(JOBS.c.tenant, "")
    turn = sa.func.row_number().over(partition_by=tenant, order_by=OUTBOX.c.id)
    ranked = (
        sa.select(OUTBOX, JOBS.c.tenant.label("tenant"), turn.label("turn"))
        .select_from(OUTBOX.outerjoin(JOBS, JOBS.c.job_id == OUTBOX.c.message_key))
        .where(OUTBOX.c.published_at.is_(None))
        .subquery()
    )
    query = sa.select(ranked).order_by(ranked.c.turn, ranked.c.id).limit(limit)
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
            tenant=row["tenant"],
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


def park(
    connection: sa.Connection, row_id: int, reason: str, at: dt.datetime
) -> ParkedMessage | None:
    """Move pending message ``row_id`` to the parked messages with ``reason``; None if it is
    not pending (published, or parked already)."""
    query = (
        OUTBOX.select()
        .where((OUTBOX.c.id == row_id) & OUTBOX.c.published_at.is_(None))
        .with_for_update()
    )
    row = connection.execute(query).mappings().first()
    if row is None:
        return None
    values = {
        "outbox_id": row["id"],
        "topic": row["topic"],
        "message_key": row["message_key"],
        "payload": bytes(row["payload"]),
        "created_at": utc(row["created_at"]),
        "parked_at": at,
        "attempts": row["attempts"] + 1,
        "reason": reason[:MAX_ERROR_CHARS],
    }
    inserted = connection.execute(OUTBOX_PARKED.insert().values(**values))
    connection.execute(OUTBOX.delete().where(OUTBOX.c.id == row_id))
    (parked_id,) = inserted.inserted_primary_key or (0,)
    return ParkedMessage(id=int(parked_id), **values)


def parked(connection: sa.Connection, key: str | None, limit: int) -> list[ParkedMessage]:
    """Parked messages, newest first; only those with ``key`` (a job id) if given."""
    query = OUTBOX_PARKED.select().order_by(OUTBOX_PARKED.c.id.desc()).limit(limit)
    if key is not None:
        query = query.where(OUTBOX_PARKED.c.message_key == key)
    return [
        ParkedMessage(
            id=row["id"],
            outbox_id=row["outbox_id"],
            topic=row["topic"],
            message_key=row["message_key"],
            payload=bytes(row["payload"]),
            created_at=utc(row["created_at"]),
            parked_at=utc(row["parked_at"]),
            attempts=row["attempts"],
            reason=row["reason"],
        )
        for row in connection.execute(query).mappings()
    ]
