"""What the job store holds and returns - jobs, submit results, outbox rows - and its errors."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass

from batch_inference_platform.lib.messaging.schemas import (
    InferenceRequestMessage,
    JobStatus,
    Priority,
)


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
    tenant: str | None = None
    """The tenant of the job the message is about (its key), if the job is known."""


@dataclass(frozen=True)
class ParkedMessage:
    """An outbox message Kafka refused for good, set aside with the reason (never resent)."""

    id: int
    outbox_id: int
    topic: str
    message_key: str
    payload: bytes
    created_at: dt.datetime
    parked_at: dt.datetime
    attempts: int
    reason: str


@dataclass(frozen=True)
class ParkResult:
    """A message parked, and the job that failed because of it (None when the message is not
    about a job, or its job had finished already)."""

    message: ParkedMessage
    failed_job: Job | None


def request_hash(request: InferenceRequestMessage) -> str:
    """SHA-256 of what the request asks for: every field except job_id and submitted_at."""
    fields = request.model_dump(mode="json", exclude={"job_id", "submitted_at"})
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()
