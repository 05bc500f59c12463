"""The outbox relay's lease: one relay publishes at a time (which keeps the outbox's order
and sends each row once), however many processes run one; a crashed holder's lease expires."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from batch_inference_platform.lib.inbox.job_tables import RELAY_LEASE

LEASE = "outbox"


def take(connection: sa.Connection, holder: str, now: dt.datetime, seconds: float) -> bool:
    """Take or renew the lease for ``seconds``; False while another holder's is unexpired."""
    until = now + dt.timedelta(seconds=seconds)
    taken = connection.execute(
        RELAY_LEASE.update()
        .where(RELAY_LEASE.c.name == LEASE)
        .where((RELAY_LEASE.c.holder == holder) | (RELAY_LEASE.c.expires_at < now))
        .values(holder=holder, expires_at=until)
    ).rowcount
    if taken:
        return True
    exists = connection.execute(
        sa.select(RELAY_LEASE.c.name).where(RELAY_LEASE.c.name == LEASE)
    ).first()
    if exists is not None:
        return False
    try:
        with connection.begin_nested():
            connection.execute(
                RELAY_LEASE.insert().values(name=LEASE, holder=holder, expires_at=until)
            )
        return True
    except IntegrityError:  # another relay created it first
        return False


def release(connection: sa.Connection, holder: str, now: dt.datetime) -> None:
    """Give the lease up, so another relay need not wait for it to expire."""
    connection.execute(
        RELAY_LEASE.update()
        .where(RELAY_LEASE.c.name == LEASE)
        .where(RELAY_LEASE.c.holder == holder)
        .values(expires_at=now - dt.timedelta(seconds=1))
    )
