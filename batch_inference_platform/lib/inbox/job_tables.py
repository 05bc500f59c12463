"""The job store's tables: client jobs, their outbox, parked messages and the relay lease."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()
JOBS = sa.Table(
    "inference_jobs",
    metadata,
    sa.Column("job_id", sa.String(200), primary_key=True),
    sa.Column("tenant", sa.String(100), nullable=False),
    sa.Column("idempotency_key", sa.String(200), nullable=True),
    sa.Column("request_hash", sa.String(64), nullable=False),
    sa.Column("request_json", sa.Text, nullable=False),
    sa.Column("priority", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("dagster_run_id", sa.String(64), nullable=True),
    sa.Column("detail", sa.Text, nullable=True),
    sa.UniqueConstraint("tenant", "idempotency_key", name="uq_inference_jobs_idempotency"),
    sa.Index("ix_inference_jobs_tenant_created", "tenant", "created_at"),
)
OUTBOX = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("topic", sa.String(249), nullable=False),
    sa.Column("message_key", sa.String(200), nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Index("ix_outbox_unpublished", "published_at", "id"),
)
OUTBOX_PARKED = sa.Table(
    "outbox_parked",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("outbox_id", sa.Integer, nullable=False),
    sa.Column("topic", sa.String(249), nullable=False),
    sa.Column("message_key", sa.String(200), nullable=False),
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("parked_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Index("ix_outbox_parked_key", "message_key"),
)
"""Outbox messages Kafka refused for good (too large, invalid, no such topic), moved here with
the reason - kept for inspection, never sent again. ``outbox_id`` is the id it had there (sqlite
may give that id to a later outbox row once this one is gone)."""
RELAY_LEASE = sa.Table(
    "outbox_relay_lease",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("holder", sa.String(64), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
)
"""Which relay may publish the outbox right now: one at a time keeps the outbox's order and
publishes each row once, however many processes (API, Dagster sensors) run a relay."""
