"""The client API: submit, read, list and cancel batch inference jobs, per tenant.

A request is authenticated (``Authorization: Bearer <key>`` or ``X-API-Key``), checked against
the tenant's tables, and persisted with its Kafka message in one transaction (the outbox)
before the 202: a broker outage delays delivery and loses nothing; only a store that cannot
persist gives 503. ``Idempotency-Key`` makes a retried submit return the same job.

Every string a client sends is checked whole (``re.fullmatch``) against a length and an ASCII
character set, and every day against the use case's partitions, before the store sees it:
bad input gets a 4xx naming the field, never a 500. A store that cannot be reached answers
503 on every endpoint, without naming where it is.
"""

import datetime as dt
import logging
import re
import uuid
from dataclasses import dataclass
from typing import Annotated, Literal, get_args

from fastapi import APIRouter, Depends, Header, Query, Response, status
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from batch_inference_platform.api.auth import tenant_dependency
from batch_inference_platform.api.limits import LimitedJsonRoute, matches, shown
from batch_inference_platform.api.problems import Problem, log_reason
from batch_inference_platform.lib.inbox.job_models import (
    IdempotencyConflict,
    InvalidTransition,
    Job,
    JobNotFound,
    StoreUnavailable,
)
from batch_inference_platform.lib.inbox.job_store import JobStore
from batch_inference_platform.lib.messaging.schemas import InferenceRequestMessage, JobStatus
from batch_inference_platform.lib.registry.references import (
    ModelReferenceError,
    parse_model_reference,
)
from batch_inference_platform.lib.tenants import AccessDenied, Priority, Tenant, TenantDirectory

PREFIX = "/api/v1/batch/inference"
logger = logging.getLogger(__name__)


def _whole(pattern: str, what: str) -> AfterValidator:
    """A validator: the whole string is ``pattern`` (no trailing newline or other leftover)."""
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not matches(compiled, value):
            raise ValueError(f"must be {what} (got {shown(value)})")
        return value

    return AfterValidator(check)


def _iso_day(value: object) -> object:
    if not isinstance(value, str) or not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value):
        raise ValueError("must be a date as YYYY-MM-DD")
    return value


_TENANT = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}"
_MODEL = r"[A-Za-z0-9][A-Za-z0-9_.@/-]{0,199}"
_TABLE = r"[a-z0-9_./-]{1,200}"
TenantId = Annotated[
    str,
    Field(min_length=1, max_length=100, json_schema_extra={"pattern": _TENANT}),
    _whole(_TENANT, "a tenant id of [A-Za-z0-9_.-]"),
]
ModelName = Annotated[
    str,
    Field(min_length=1, max_length=200, json_schema_extra={"pattern": _MODEL}),
    _whole(_MODEL, "'name@alias' or 'name/version' of [A-Za-z0-9_.-]"),
]
TableName = Annotated[
    str,
    Field(min_length=1, max_length=200, json_schema_extra={"pattern": _TABLE}),
    _whole(_TABLE, "a table name: lower-case segments of [a-z0-9_-] joined by '/'"),
]
Day = Annotated[dt.date, BeforeValidator(_iso_day)]
JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}")
IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,200}")
STATUSES: tuple[str, ...] = get_args(JobStatus)


class InferenceRequest(BaseModel):
    """What a client asks for: a model, a feature table and a day or a date range."""

    model_config = ConfigDict(extra="forbid")

    tenant: TenantId | None = Field(None, description="Optional; must be the key's tenant.")
    model: ModelName = Field(
        description="name@alias or name/version", examples=["credit_risk@champion"]
    )
    feature_table: TableName = Field(
        description="A table the tenant may read, e.g. validated/credit"
    )
    partition: Day | None = Field(None, description="One day (or use start/end date).")
    start_date: Day | None = None
    end_date: Day | None = None
    priority: Priority | None = Field(None, description="Default: the tenant's.")
    output_table: TableName | None = Field(None, description="Under the tenant's output root.")

    @model_validator(mode="after")
    def _one_range(self) -> "InferenceRequest":
        if self.partition and (self.start_date or self.end_date):
            raise ValueError("give either partition or start_date/end_date, not both")
        if not self.partition and not (self.start_date and self.end_date):
            raise ValueError("give partition, or both start_date and end_date")
        if self.start_date and self.end_date and self.start_date > self.end_date:
            raise ValueError(f"start_date {self.start_date} is after end_date {self.end_date}")
        return self

    @property
    def days(self) -> tuple[dt.date, dt.date]:
        if self.partition:
            return self.partition, self.partition
        assert self.start_date and self.end_date
        return self.start_date, self.end_date


class JobView(BaseModel):
    """A job as the client sees it."""

    job_id: str
    tenant: str
    status: Literal["accepted", "queued", "started", "succeeded", "failed", "canceled"]
    priority: Priority
    model: str
    feature_table: str
    start_date: dt.date
    end_date: dt.date
    output_table: str
    created_at: dt.datetime
    updated_at: dt.datetime
    dagster_run_id: str | None
    detail: str | None
    links: dict[str, str]

    @classmethod
    def of(cls, job: Job) -> "JobView":
        r = job.request
        return cls(
            job_id=job.job_id,
            tenant=job.tenant,
            status=job.status,  # type: ignore[arg-type]
            priority=r.priority,
            model=r.model,
            feature_table=r.feature_table,
            start_date=r.start_date,
            end_date=r.end_date,
            output_table=r.output_table,
            created_at=job.created_at,
            updated_at=job.updated_at,
            dagster_run_id=job.dagster_run_id,
            detail=job.detail,
            links={"self": f"{PREFIX}/{job.job_id}"},
        )


@dataclass(frozen=True)
class JobsService:
    """What the client API needs: the job store and the tenants, plus request limits.

    Requests may name days from ``first_day`` (the use case's first partition) to today (UTC)
    plus ``days_ahead``; left out, both come from the settings
    (``batch-inference.partitions.start-date``, ``batch-inference.api.partition-days-ahead``).
    """

    store: JobStore
    tenants: TenantDirectory
    max_days: int
    first_day: dt.date | None = None
    days_ahead: int | None = None

    def __post_init__(self) -> None:
        if self.first_day is None or self.days_ahead is None:
            from batch_inference_platform.config import load_settings

            application = load_settings().application
            if self.first_day is None:
                object.__setattr__(self, "first_day", application.partitions.start_date)
            if self.days_ahead is None:
                object.__setattr__(self, "days_ahead", application.api.partition_days_ahead)

    def day_range(self) -> tuple[dt.date, dt.date]:
        """The first and the last day a request may name now."""
        assert self.first_day is not None and self.days_ahead is not None
        today = dt.datetime.now(dt.UTC).date()
        return self.first_day, today + dt.timedelta(days=self.days_ahead)


def _unavailable(error: StoreUnavailable, action: str) -> Problem:
    """503 for a store that cannot be reached: the reason goes to the log, not the client."""
    logger.warning("job store unavailable (%s): %s", action, log_reason(error))
    return Problem(
        503,
        "Unavailable",
        f"the job store is unavailable; could not {action}, try again later",
        {"Retry-After": "5"},
    )


def _job_id(job_id: str) -> str:
    if not matches(JOB_ID, job_id):
        raise Problem(
            400,
            "Invalid job id",
            f"job id {shown(job_id)} must be 1-200 characters of [A-Za-z0-9_.:-]",
        )
    return job_id


def jobs_router(service: JobsService) -> APIRouter:
    """Routes under ``/api/v1/batch/inference``."""
    router = APIRouter(prefix=PREFIX, tags=["batch inference"], route_class=LimitedJsonRoute)

    tenant_of = tenant_dependency(service.tenants)

    @router.post(
        "",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=JobView,
        responses={200: {"description": "Replay of an idempotent submit: the existing job"}},
    )
    def submit(
        body: InferenceRequest,
        tenant: Annotated[Tenant, Depends(tenant_of)],
        response: Response,
        idempotency_key: Annotated[
            str | None, Header(description="1-200 visible ASCII characters.")
        ] = None,
    ) -> JobView:
        """Accept a batch inference job; it runs when the platform's sensor picks it up."""
        if idempotency_key is not None and not matches(IDEMPOTENCY_KEY, idempotency_key):
            raise Problem(
                400,
                "Invalid Idempotency-Key",
                "Idempotency-Key is empty"
                if not idempotency_key
                else "Idempotency-Key must be 1-200 visible ASCII characters (no spaces)",
            )
        if body.tenant and body.tenant != tenant.id:
            raise Problem(403, "Forbidden", f"the API key belongs to tenant {tenant.id!r}")
        try:
            reference = parse_model_reference(body.model)
        except ModelReferenceError as error:
            raise Problem(422, "Invalid request", str(error)) from error
        first, last = body.days
        if (last - first).days + 1 > service.max_days:
            raise Problem(
                422, "Invalid request", f"{first}..{last} is longer than {service.max_days} days"
            )
        earliest, latest = service.day_range()
        if first < earliest:
            raise Problem(
                422,
                "Invalid request",
                f"{first} is before the first partition {earliest} "
                "(batch-inference.partitions.start-date)",
            )
        if last > latest:
            raise Problem(
                422,
                "Invalid request",
                f"{last} is after the last day a request may name, {latest} (today + "
                f"{service.days_ahead} days: batch-inference.api.partition-days-ahead)",
            )
        output = body.output_table or "predictions/" + re.sub(
            r"[^a-z0-9_-]", "_", reference.name.lower()
        )
        try:
            tenant.input_table(body.feature_table)
            tenant.output_uri(output)
        except AccessDenied as error:
            raise Problem(403, "Forbidden", str(error)) from error
        message = InferenceRequestMessage(
            job_id=str(uuid.uuid4()),
            tenant=tenant.id,
            model=body.model,
            feature_table=body.feature_table,
            start_date=first,
            end_date=last,
            priority=body.priority or tenant.default_priority,
            output_table=output,
            submitted_at=dt.datetime.now(dt.UTC),
        )
        try:
            result = service.store.submit(message, idempotency_key)
        except IdempotencyConflict as error:
            raise Problem(409, "Idempotency key reused", str(error)) from error
        except StoreUnavailable as error:
            raise _unavailable(error, "persist the job") from None
        location = f"{PREFIX}/{result.job.job_id}"
        response.headers["Location"] = location
        if not result.created:
            response.status_code = status.HTTP_200_OK
        return JobView.of(result.job)

    @router.get("/{job_id}", response_model=JobView)
    def read(job_id: str, tenant: Annotated[Tenant, Depends(tenant_of)]) -> JobView:
        """A job of the caller's tenant (another tenant's job is not found)."""
        try:
            job = service.store.get(tenant.id, _job_id(job_id))
        except StoreUnavailable as error:
            raise _unavailable(error, "read the job") from None
        if job is None:
            raise Problem(404, "Not found", f"no job {job_id} for tenant {tenant.id!r}")
        return JobView.of(job)

    @router.get("", response_model=list[JobView])
    def list_jobs(
        tenant: Annotated[Tenant, Depends(tenant_of)],
        status_filter: Annotated[str | None, Query(alias="status")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[JobView]:
        """The caller's jobs, newest first."""
        if status_filter is not None and status_filter not in STATUSES:
            raise Problem(
                400,
                "Invalid status filter",
                f"status {shown(status_filter)} must be one of {', '.join(STATUSES)}",
            )
        try:
            jobs = service.store.list(tenant.id, status=status_filter, limit=limit)
        except StoreUnavailable as error:
            raise _unavailable(error, "list the jobs") from None
        return [JobView.of(j) for j in jobs]

    @router.post("/{job_id}/cancel", response_model=JobView)
    def cancel(job_id: str, tenant: Annotated[Tenant, Depends(tenant_of)]) -> JobView:
        """Cancel a job that has not finished (a queued or running run is cancelled too)."""
        try:
            return JobView.of(service.store.cancel(tenant.id, _job_id(job_id)))
        except StoreUnavailable as error:
            raise _unavailable(error, "cancel the job") from None
        except JobNotFound as error:
            raise Problem(404, "Not found", str(error)) from error
        except InvalidTransition as error:
            raise Problem(409, "Conflict", str(error)) from error

    return router


__all__ = ["InferenceRequest", "JobView", "JobsService", "jobs_router"]
