"""The job store: client jobs and their outbox - what the API accepted, what became of it, and
the Kafka messages that say so - in one database (sqlite locally, PostgreSQL in production).

A job and the messages announcing it commit in one transaction, and the relay
(``lib/inbox/relay.py``) publishes the outbox afterwards: an accepted request is never lost,
whatever Kafka is doing. An idempotency key is unique per tenant in the database itself, so
concurrent submits with the same key - in any number of processes - make one job. A job in a
terminal status (succeeded, failed, canceled) never changes again.

The other pieces: ``job_tables`` (schema), ``job_models`` (records and errors), ``job_db``
(engines and transactions), ``outbox`` and ``relay_lease`` (their statements); ``JobStore`` ties
them together and is what the API, the sensors and the relay use.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, get_args

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from batch_inference_platform.lib.inbox import outbox, relay_lease
from batch_inference_platform.lib.inbox.job_db import engine_for, now, transaction, utc
from batch_inference_platform.lib.inbox.job_models import (
    IdempotencyConflict,
    InvalidTransition,
    Job,
    JobNotFound,
    OutboxRow,
    ParkedMessage,
    ParkResult,
    StoreUnavailable,
    SubmitResult,
    request_hash,
)
from batch_inference_platform.lib.inbox.job_tables import JOBS
from batch_inference_platform.lib.messaging.schemas import (
    TERMINAL_STATUSES,
    ErrorMessage,
    InferenceRequestMessage,
    JobStatus,
    StatusMessage,
    decode_request,
    encode,
)
from batch_inference_platform.lib.messaging.topics import Topics

_STATUSES = frozenset(get_args(JobStatus))
MAX_DETAIL_CHARS = 1000
"""A job's failure detail stays small: its status message must always be publishable."""


class JobStore:
    """The job and outbox tables in the database at ``url`` (created on first use)."""

    def __init__(self, url: str, topics: Topics) -> None:
        self.engine = engine_for(url)
        self.topics = topics

    # ------------------------------------------------------------------ jobs

    def submit(self, request: InferenceRequestMessage, idempotency_key: str | None) -> SubmitResult:
        """Accept ``request``: the job and its input and 'accepted' messages, atomically.

        A key this tenant used before returns that job for the same request and raises
        ``IdempotencyConflict`` for a different one."""
        digest = request_hash(request)
        for _ in range(5):
            at = now()
            job = Job(
                job_id=request.job_id,
                tenant=request.tenant,
                idempotency_key=idempotency_key,
                request_hash=digest,
                request=request,
                priority=request.priority,
                status="accepted",
                created_at=at,
                updated_at=at,
                dagster_run_id=None,
                detail=None,
            )
            status = StatusMessage(job_id=job.job_id, tenant=job.tenant, status="accepted", at=at)
            try:
                with self._transaction() as connection:
                    connection.execute(JOBS.insert().values(**_job_values(job)))
                    outbox.append(connection, self.topics.input, job.job_id, encode(request), at)
                    outbox.append(connection, self.topics.status, job.job_id, encode(status), at)
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
        with self._transaction() as connection:
            return self._transition(connection, job_id, status, None, dagster_run_id, detail, extra)

    def cancel(self, tenant: str, job_id: str) -> Job:
        """Cancel ``tenant``'s job; ``JobNotFound`` if it has no such job, ``InvalidTransition``
        if the job already succeeded or failed."""
        with self._transaction() as connection:
            return self._transition(connection, job_id, "canceled", tenant, None, None, ())

    def _transition(
        self,
        connection: sa.Connection,
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
        row = connection.execute(query).mappings().first()
        if row is None:
            raise JobNotFound(f"job {job_id!r} not found")
        current = _job(row)
        if current.status == status:
            return current
        if current.status in TERMINAL_STATUSES:
            raise InvalidTransition(f"job {job_id} is {current.status}; it cannot become {status}")
        at = now()
        job = replace(
            current,
            status=status,
            updated_at=at,
            dagster_run_id=dagster_run_id or current.dagster_run_id,
            detail=detail,
        )
        connection.execute(
            JOBS.update()
            .where(JOBS.c.job_id == job_id)
            .values(
                status=job.status,
                updated_at=at,
                dagster_run_id=job.dagster_run_id,
                detail=job.detail,
            )
        )
        message = StatusMessage(
            job_id=job_id,
            tenant=job.tenant,
            status=status,
            at=at,
            dagster_run_id=job.dagster_run_id,
            detail=detail,
        )
        outbox.append(connection, self.topics.status, job_id, encode(message), at)
        for topic, key, payload in extra:
            outbox.append(connection, topic, key, payload, at)
        return job

    # ------------------------------------------------------------------ outbox

    def pending(self, limit: int = 500) -> builtins.list[OutboxRow]:
        """Unpublished messages: tenants in turns, each tenant's (and job's) oldest first."""
        with self._transaction() as connection:
            return outbox.pending(connection, limit)

    def mark_published(self, ids: Sequence[int]) -> None:
        """The broker acknowledged these messages."""
        if ids:
            with self._transaction() as connection:
                outbox.mark_published(connection, ids, now())

    def mark_failed(self, ids: Sequence[int], error: str) -> None:
        """Publishing these messages failed with ``error``; they stay pending."""
        if ids:
            with self._transaction() as connection:
                outbox.mark_failed(connection, ids, error)

    def park(self, row_id: int, reason: str) -> ParkResult | None:
        """Set pending message ``row_id`` aside for good - Kafka refused it permanently - with
        ``reason``, and fail its job (unless finished) saying so: status 'failed' with that
        detail and an error message, both small enough to publish. One transaction; None if
        the message is not pending any more."""
        with self._transaction() as connection:
            message = outbox.park(connection, row_id, reason, now())
            if message is None:
                return None
            query = JOBS.select().where(JOBS.c.job_id == message.message_key).with_for_update()
            row = connection.execute(query).mappings().first()
            if row is None or row["status"] in TERMINAL_STATUSES:
                return ParkResult(message, None)
            detail = self._refusal(message)
            error = ErrorMessage(
                job_id=row["job_id"],
                tenant=row["tenant"],
                dagster_run_id=row["dagster_run_id"],
                error=detail,
                failed_step=None,
                metrics={},
                at=now(),
            )
            extra = [(self.topics.errors, row["job_id"], encode(error))]
            job = self._transition(connection, row["job_id"], "failed", None, None, detail, extra)
            return ParkResult(message, job)

    def _refusal(self, message: ParkedMessage) -> str:
        kinds = {
            self.topics.input: "request",
            self.topics.status: "status",
            self.topics.output: "output",
            self.topics.errors: "error",
        }
        what = " ".join(filter(None, [kinds.get(message.topic), "message"]))
        detail = (
            f"Kafka refused the job's {what} ({len(message.payload):,} bytes to "
            f"{message.topic}): {message.reason}"
        )
        return detail[:MAX_DETAIL_CHARS]

    def parked(self, job_id: str | None = None, limit: int = 100) -> builtins.list[ParkedMessage]:
        """Messages Kafka refused for good, newest first (only ``job_id``'s if given)."""
        with self._transaction() as connection:
            return outbox.parked(connection, job_id, limit)

    def try_relay_lease(self, holder: str, seconds: float) -> bool:
        """Take or renew the publishing lease for ``seconds``; False while another relay
        holds an unexpired lease (a crashed holder's lease simply expires)."""
        with self._transaction() as connection:
            return relay_lease.take(connection, holder, now(), seconds)

    def release_relay_lease(self, holder: str) -> None:
        """Give the lease up (on shutdown), so another relay need not wait for it to expire."""
        with self._transaction() as connection:
            relay_lease.release(connection, holder, now())

    @contextmanager
    def _transaction(self) -> Iterator[sa.Connection]:
        with transaction(self.engine) as connection:
            yield connection


def _job_values(job: Job) -> dict[str, Any]:
    values = {k: v for k, v in job.__dict__.items() if k != "request"}
    return {**values, "request_json": encode(job.request).decode("utf-8")}


def _job(row: Any) -> Job:
    return Job(
        job_id=row["job_id"],
        tenant=row["tenant"],
        idempotency_key=row["idempotency_key"],
        request_hash=row["request_hash"],
        request=decode_request(row["request_json"].encode("utf-8")),  # version 1 read too
        priority=row["priority"],
        status=row["status"],
        created_at=utc(row["created_at"]),
        updated_at=utc(row["updated_at"]),
        dagster_run_id=row["dagster_run_id"],
        detail=row["detail"],
    )
