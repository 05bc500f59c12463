"""Client jobs and their outbox: what the API accepted, what became of it, and the Kafka
messages that say so, in one database (sqlite locally, PostgreSQL in production).

A job and the messages announcing it commit in one transaction, and the relay
(``lib/inbox/relay.py``) publishes the outbox afterwards: an accepted request is never lost,
whatever Kafka is doing. An idempotency key is unique per tenant in the database itself, so
concurrent submits with the same key - in any number of processes - make one job. A job in a
terminal status (succeeded, failed, canceled) never changes again.
"""

from __future__ import annotations

import builtins
import datetime as dt
import hashlib
import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, get_args

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError, ProgrammingError

from batch_inference_platform.lib.messaging.schemas import (
    TERMINAL_STATUSES,
    InferenceRequestMessage,
    JobStatus,
    Priority,
    StatusMessage,
    decode,
    encode,
)
from batch_inference_platform.lib.messaging.topics import Topics

_metadata = sa.MetaData()
JOBS = sa.Table(
    "inference_jobs",
    _metadata,
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
    _metadata,
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
RELAY_LEASE = sa.Table(
    "outbox_relay_lease",
    _metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("holder", sa.String(64), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
)
"""Which relay may publish the outbox right now: one at a time keeps the outbox's order and
publishes each row once, however many processes (API, Dagster sensors) run a relay."""
_LEASE = "outbox"

_STATUSES = frozenset(get_args(JobStatus))


class JobStoreError(Exception):
    """Base of the job store's errors."""


class StoreUnavailable(JobStoreError):
    """The database cannot be reached (or stays locked): try again later (HTTP 503)."""


class IdempotencyConflict(JobStoreError):
    """An idempotency key (or job id) of this tenant was already used for another request."""


class JobNotFound(JobStoreError, LookupError):
    """No such job for this tenant."""


class InvalidTransition(JobStoreError):
    """The job is in a terminal status and cannot move to another one."""


@dataclass(frozen=True)
class Job:
    """One client job: its request, where it stands, and the Dagster run working on it."""

    job_id: str
    tenant: str
    idempotency_key: str | None
    request_hash: str
    request: InferenceRequestMessage
    priority: Priority
    status: JobStatus
    created_at: dt.datetime
    updated_at: dt.datetime
    dagster_run_id: str | None
    detail: str | None


@dataclass(frozen=True)
class SubmitResult:
    """The job a submit refers to; ``created`` is False for a replay of an earlier submit."""

    job: Job
    created: bool


@dataclass(frozen=True)
class OutboxRow:
    """A message waiting to be published (or published at ``published_at``)."""

    id: int
    topic: str
    message_key: str
    payload: bytes
    created_at: dt.datetime
    published_at: dt.datetime | None
    attempts: int
    last_error: str | None


def request_hash(request: InferenceRequestMessage) -> str:
    """SHA-256 of what the request asks for: every field except job_id and submitted_at."""
    fields = request.model_dump(mode="json", exclude={"job_id", "submitted_at"})
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


class JobStore:
    """The job and outbox tables in the database at ``url`` (created on first use)."""

    def __init__(self, url: str, topics: Topics) -> None:
        self.engine = _engine(url)
        self.topics = topics

    # ------------------------------------------------------------------ jobs

    def submit(self, request: InferenceRequestMessage, idempotency_key: str | None) -> SubmitResult:
        """Accept ``request``: the job and its input and 'accepted' messages, atomically.

        A key this tenant used before returns that job for the same request and raises
        ``IdempotencyConflict`` for a different one."""
        digest = request_hash(request)
        for _ in range(5):
            now = _now()
            job = Job(
                job_id=request.job_id,
                tenant=request.tenant,
                idempotency_key=idempotency_key,
                request_hash=digest,
                request=request,
                priority=request.priority,
                status="accepted",
                created_at=now,
                updated_at=now,
                dagster_run_id=None,
                detail=None,
            )
            status = StatusMessage(job_id=job.job_id, tenant=job.tenant, status="accepted", at=now)
            try:
                with self._transaction() as connection:
                    connection.execute(JOBS.insert().values(**_job_values(job)))
                    self._append(connection, self.topics.input, job.job_id, encode(request), now)
                    self._append(connection, self.topics.status, job.job_id, encode(status), now)
                return SubmitResult(job, created=True)
            except IntegrityError:
                pass
            existing = self._conflicting(request, idempotency_key)
            if existing is None:
                continue  # the other insert rolled back: try again
            if existing.request_hash == digest and existing.idempotency_key == idempotency_key:
                return SubmitResult(existing, created=False)
            if idempotency_key is not None and existing.idempotency_key == idempotency_key:
                raise IdempotencyConflict(
                    f"idempotency key {idempotency_key!r} was already used for a different "
                    f"request (job {existing.job_id})"
                )
            raise IdempotencyConflict(f"job id {request.job_id!r} is already used")
        raise StoreUnavailable(f"could not store job {request.job_id}: repeated conflicts")

    def _conflicting(self, request: InferenceRequestMessage, key: str | None) -> Job | None:
        """The stored job an insert of ``request`` collided with, if it is still there."""
        queries = [JOBS.select().where(JOBS.c.job_id == request.job_id)]
        if key is not None:
            by_key = (JOBS.c.tenant == request.tenant) & (JOBS.c.idempotency_key == key)
            queries.insert(0, JOBS.select().where(by_key))
        with self._transaction() as connection:
            for query in queries:
                row = connection.execute(query).mappings().first()
                if row is not None:
                    return _job(row)
        return None

    def get(self, tenant: str, job_id: str) -> Job | None:
        """The job ``job_id`` if it belongs to ``tenant``."""
        query = JOBS.select().where((JOBS.c.job_id == job_id) & (JOBS.c.tenant == tenant))
        with self._transaction() as connection:
            row = connection.execute(query).mappings().first()
        return None if row is None else _job(row)

    def update_status(
        self,
        job_id: str,
        status: JobStatus,
        *,
        dagster_run_id: str | None = None,
        detail: str | None = None,
        extra: Sequence[tuple[str, str, bytes]] = (),
    ) -> Job:
        """Move the job to ``status`` and queue the status message plus ``extra`` (topic, key,
        payload) messages, atomically. Repeating the current status changes nothing; leaving a
        terminal status raises ``InvalidTransition``."""
        return self._transition(job_id, status, None, dagster_run_id, detail, extra)

    def cancel(self, tenant: str, job_id: str) -> Job:
        """Cancel ``tenant``'s job; ``JobNotFound`` if it has no such job, ``InvalidTransition``
        if the job already succeeded or failed."""
        return self._transition(job_id, "canceled", tenant, None, None, ())

    def _transition(
        self,
        job_id: str,
        status: JobStatus,
        tenant: str | None,
        dagster_run_id: str | None,
        detail: str | None,
        extra: Sequence[tuple[str, str, bytes]],
    ) -> Job:
        if status not in _STATUSES:
            raise ValueError(f"unknown job status {status!r} (known: {sorted(_STATUSES)})")
        query = JOBS.select().where(JOBS.c.job_id == job_id).with_for_update()
        if tenant is not None:
            query = query.where(JOBS.c.tenant == tenant)
        with self._transaction() as connection:
            row = connection.execute(query).mappings().first()
            if row is None:
                raise JobNotFound(f"job {job_id!r} not found")
            current = _job(row)
            if current.status == status:
                return current
            if current.status in TERMINAL_STATUSES:
                raise InvalidTransition(
                    f"job {job_id} is {current.status}; it cannot become {status}"
                )
            now = _now()
            job = replace(
                current,
                status=status,
                updated_at=now,
                dagster_run_id=dagster_run_id or current.dagster_run_id,
                detail=detail,
            )
            connection.execute(
                JOBS.update()
                .where(JOBS.c.job_id == job_id)
                .values(
                    status=job.status,
                    updated_at=now,
                    dagster_run_id=job.dagster_run_id,
                    detail=job.detail,
                )
            )
            message = StatusMessage(
                job_id=job_id,
                tenant=job.tenant,
                status=status,
                at=now,
                dagster_run_id=job.dagster_run_id,
                detail=detail,
            )
            self._append(connection, self.topics.status, job_id, encode(message), now)
            for topic, key, payload in extra:
                self._append(connection, topic, key, payload, now)
        return job

    # ------------------------------------------------------------------ outbox

    def pending(self, limit: int = 500) -> builtins.list[OutboxRow]:
        """Unpublished messages, oldest first."""
        query = (
            OUTBOX.select()
            .where(OUTBOX.c.published_at.is_(None))
            .order_by(OUTBOX.c.id)
            .limit(limit)
        )
        with self._transaction() as connection:
            rows = connection.execute(query).mappings().all()
        return [
            OutboxRow(
                id=row["id"],
                topic=row["topic"],
                message_key=row["message_key"],
                payload=bytes(row["payload"]),
                created_at=_utc(row["created_at"]),
                published_at=None,
                attempts=row["attempts"],
                last_error=row["last_error"],
            )
            for row in rows
        ]

    def try_relay_lease(self, holder: str, seconds: float) -> bool:
        """Take or renew the publishing lease for ``seconds``; False while another relay
        holds an unexpired lease (a crashed holder's lease simply expires)."""
        now = _now()
        until = now + dt.timedelta(seconds=seconds)
        with self._transaction() as connection:
            taken = connection.execute(
                RELAY_LEASE.update()
                .where(RELAY_LEASE.c.name == _LEASE)
                .where((RELAY_LEASE.c.holder == holder) | (RELAY_LEASE.c.expires_at < now))
                .values(holder=holder, expires_at=until)
            ).rowcount
            if taken:
                return True
            exists = connection.execute(
                sa.select(RELAY_LEASE.c.name).where(RELAY_LEASE.c.name == _LEASE)
            ).first()
            if exists is None:
                try:
                    with connection.begin_nested():
                        connection.execute(
                            RELAY_LEASE.insert().values(
                                name=_LEASE, holder=holder, expires_at=until
                            )
                        )
                    return True
                except IntegrityError:  # another relay created it first
                    return False
        return False

    def release_relay_lease(self, holder: str) -> None:
        """Give the lease up (on shutdown), so another relay need not wait for it to expire."""
        with self._transaction() as connection:
            connection.execute(
                RELAY_LEASE.update()
                .where(RELAY_LEASE.c.name == _LEASE)
                .where(RELAY_LEASE.c.holder == holder)
                .values(expires_at=_now() - dt.timedelta(seconds=1))
            )

    def mark_published(self, ids: Sequence[int]) -> None:
        """The broker acknowledged these messages."""
        if ids:
            with self._transaction() as connection:
                connection.execute(
                    OUTBOX.update().where(OUTBOX.c.id.in_(ids)).values(published_at=_now())
                )

    def mark_failed(self, ids: Sequence[int], error: str) -> None:
        """Publishing these messages failed with ``error``; they stay pending."""
        if ids:
            with self._transaction() as connection:
                connection.execute(
                    OUTBOX.update()
                    .where(OUTBOX.c.id.in_(ids))
                    .values(attempts=OUTBOX.c.attempts + 1, last_error=error[:4000])
                )

    def _append(
        self, connection: sa.Connection, topic: str, key: str, payload: bytes, now: dt.datetime
    ) -> None:
        row = {"topic": topic, "message_key": key, "payload": payload, "created_at": now}
        connection.execute(OUTBOX.insert().values(**row, attempts=0))

    @contextmanager
    def _transaction(self) -> Iterator[sa.Connection]:
        """One transaction; an unreachable or locked database becomes ``StoreUnavailable``."""
        try:
            _ensure_schema(self.engine)
            with self.engine.begin() as connection:
                yield connection
        except (OperationalError, InterfaceError) as error:
            reason = str(error.orig or error).strip().splitlines()[0]
            raise StoreUnavailable(f"job store unavailable: {reason}") from error

    def list(
        self, tenant: str, *, status: str | None = None, limit: int = 100
    ) -> builtins.list[Job]:
        """``tenant``'s jobs, newest first, optionally only those in ``status``."""
        query = JOBS.select().where(JOBS.c.tenant == tenant)
        if status is not None:
            query = query.where(JOBS.c.status == status)
        query = query.order_by(JOBS.c.created_at.desc(), JOBS.c.job_id.desc()).limit(limit)
        with self._transaction() as connection:
            rows = connection.execute(query).mappings().all()
        return [_job(row) for row in rows]


# ---------------------------------------------------------------------- rows


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _utc(value: dt.datetime) -> dt.datetime:
    """sqlite returns naive datetimes: they were stored in UTC."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _job_values(job: Job) -> dict[str, Any]:
    values = {k: v for k, v in job.__dict__.items() if k != "request"}
    return {**values, "request_json": encode(job.request).decode("utf-8")}


def _job(row: Any) -> Job:
    return Job(
        job_id=row["job_id"],
        tenant=row["tenant"],
        idempotency_key=row["idempotency_key"],
        request_hash=row["request_hash"],
        request=decode(InferenceRequestMessage, row["request_json"].encode("utf-8")),
        priority=row["priority"],
        status=row["status"],
        created_at=_utc(row["created_at"]),
        updated_at=_utc(row["updated_at"]),
        dagster_run_id=row["dagster_run_id"],
        detail=row["detail"],
    )


# ---------------------------------------------------------------------- engines

_engines: dict[str, sa.Engine] = {}
_ready: set[sa.Engine] = set()
_lock = threading.Lock()


def _engine(url: str) -> sa.Engine:
    """One engine (connection pool) per database URL in this process."""
    if url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = _create_engine(url)
        return engine


def _create_engine(url: str) -> sa.Engine:
    if not url.startswith("sqlite"):
        connect_args = {"connect_timeout": 10} if url.startswith("postgresql") else {}
        return sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args)
    engine = sa.create_engine(url, connect_args={"timeout": 30})

    # Writers take the lock when their transaction begins (BEGIN IMMEDIATE) and wait for it
    # up to the busy timeout: a read-then-write transaction cannot fail on a lock upgrade.
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # pysqlite must not issue BEGIN itself
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout = 30000")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: sa.Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _ensure_schema(engine: sa.Engine) -> None:
    """Create the tables once per engine (several processes may race to do it)."""
    if engine in _ready:
        return
    with _lock:
        if engine in _ready:
            return
        try:
            _metadata.create_all(engine)
        except (IntegrityError, ProgrammingError):  # another process created them meanwhile
            _metadata.create_all(engine)
        _ready.add(engine)
