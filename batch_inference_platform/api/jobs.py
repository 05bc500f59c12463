"""The client API: submit, read, list and cancel batch inference jobs, per tenant.

A request is authenticated (``Authorization: Bearer <key>`` or ``X-API-Key``), checked against
the tenant's tables, and persisted with its Kafka message in one transaction (the outbox)
before the 202: a broker outage delays delivery and loses nothing; only a store that cannot
persist gives 503. ``Idempotency-Key`` makes a retried submit return the same job.
"""

import datetime as dt
import re
import uuid
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field, model_validator

from batch_inference_platform.api.auth import tenant_dependency
from batch_inference_platform.api.problems import Problem
from batch_inference_platform.lib.inbox.jobs import (
    IdempotencyConflict,
    InvalidTransition,
    Job,
    JobNotFound,
    JobStore,
    StoreUnavailable,
)
from batch_inference_platform.lib.messaging.schemas import InferenceRequestMessage
from batch_inference_platform.lib.registry.references import (
    ModelReferenceError,
    parse_model_reference,
)
from batch_inference_platform.lib.tenants import AccessDenied, Priority, Tenant, TenantDirectory

PREFIX = "/api/v1/batch/inference"


class InferenceRequest(BaseModel):
    """What a client asks for: a model, a feature table and a day or a date range."""

    model_config = ConfigDict(extra="forbid")

    tenant: str | None = Field(None, description="Optional; must be the key's tenant.")
    model: str = Field(description="name@alias or name/version", examples=["credit_risk@champion"])
    feature_table: str = Field(description="A table the tenant may read, e.g. validated/credit")
    partition: dt.date | None = Field(None, description="One day (or use start/end date).")
    start_date: dt.date | None = None
    end_date: dt.date | None = None
    priority: Priority | None = Field(None, description="Default: the tenant's.")
    output_table: str | None = Field(None, description="Under the tenant's output root.")

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
    """What the client API needs: the job store and the tenants, plus request limits."""

    store: JobStore
    tenants: TenantDirectory
    max_days: int


def jobs_router(service: JobsService) -> APIRouter:
    """Routes under ``/api/v1/batch/inference``."""
    router = APIRouter(prefix=PREFIX, tags=["batch inference"])

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
        idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
    ) -> JobView:
        """Accept a batch inference job; it runs when the platform's sensor picks it up."""
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
            raise Problem(
                503,
                "Unavailable",
                f"the job could not be persisted: {error}",
                {"Retry-After": "5"},
            ) from error
        location = f"{PREFIX}/{result.job.job_id}"
        response.headers["Location"] = location
        if not result.created:
            response.status_code = status.HTTP_200_OK
        return JobView.of(result.job)

    @router.get("/{job_id}", response_model=JobView)
    def read(job_id: str, tenant: Annotated[Tenant, Depends(tenant_of)]) -> JobView:
        """A job of the caller's tenant (another tenant's job is not found)."""
        job = service.store.get(tenant.id, job_id)
        if job is None:
            raise Problem(404, "Not found", f"no job {job_id!r} for tenant {tenant.id!r}")
        return JobView.of(job)

    @router.get("", response_model=list[JobView])
    def list_jobs(
        tenant: Annotated[Tenant, Depends(tenant_of)],
        status_filter: Annotated[str | None, Query(alias="status")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[JobView]:
        """The caller's jobs, newest first."""
        return [
            JobView.of(j) for j in service.store.list(tenant.id, status=status_filter, limit=limit)
        ]

    @router.post("/{job_id}/cancel", response_model=JobView)
    def cancel(job_id: str, tenant: Annotated[Tenant, Depends(tenant_of)]) -> JobView:
        """Cancel a job that has not finished (a queued or running run is cancelled too)."""
        try:
            return JobView.of(service.store.cancel(tenant.id, job_id))
        except JobNotFound as error:
            raise Problem(404, "Not found", str(error)) from error
        except InvalidTransition as error:
            raise Problem(409, "Conflict", str(error)) from error

    return router


__all__ = ["InferenceRequest", "JobView", "JobsService", "jobs_router"]
