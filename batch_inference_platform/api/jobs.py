"""The client API: submit, read, list and cancel batch inference jobs, per tenant.

A request names a deployment (``defs/deployments/<name>``): by default it scores the
deployment's validated table (``validated/<name>``) with its serving model
(``<model>@<alias>``); a request may name another version or alias of that model, or another
table the tenant may read, never another deployment's model. It is authenticated
(``Authorization: Bearer <key>`` or ``X-API-Key``), checked against the tenant's deployments
and tables, and persisted with its Kafka message in one transaction (the outbox) before the
202: a broker outage delays delivery and loses nothing; only a store that cannot persist gives
503. ``Idempotency-Key`` makes a retried submit return the same job.

Days select the deployment's partitions: daily, those days; hourly, every hour of those days.
An unpartitioned deployment scores its whole table, so a request for it names no days (days
are refused rather than silently ignored).

Every string a client sends is checked whole (``re.fullmatch``) against a length and an ASCII
character set, and every day against the deployment's partitions (from its partition start to
today + ``api.partition-days-ahead``), before the store sees it: bad input gets a 4xx naming
the field, never a 500. A store that cannot be reached answers 503 on every endpoint, without
naming where it is.
"""

import datetime as dt
import logging
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Literal, get_args

from fastapi import APIRouter, Depends, Header, Query, Response, status
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from batch_inference_platform.api.auth import tenant_dependency
from batch_inference_platform.api.limits import LimitedJsonRoute, matches, shown
from batch_inference_platform.api.problems import Problem, log_reason
from batch_inference_platform.lib.deployments.spec import Deployment
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
_DEPLOYMENT = r"[a-z][a-z0-9_]{0,62}"
_MODEL = r"(?:models:/)?[A-Za-z0-9][A-Za-z0-9_.@/-]{0,199}"
MODELS_URI = "models:/"
"""MLflow's prefix for a model reference; accepted and dropped (``models:/name@alias``)."""
_TABLE = r"[a-z0-9_./-]{1,200}"
TenantId = Annotated[
    str,
    Field(min_length=1, max_length=100, json_schema_extra={"pattern": _TENANT}),
    _whole(_TENANT, "a tenant id of [A-Za-z0-9_.-]"),
]
DeploymentName = Annotated[
    str,
    Field(min_length=1, max_length=63, json_schema_extra={"pattern": _DEPLOYMENT}),
    _whole(_DEPLOYMENT, "a deployment name of [a-z0-9_], starting with a letter"),
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
    """What a client asks for: a deployment, and a day or a date range of its partitions
    (none for an unpartitioned deployment); optionally a version or alias of its model and
    another table to score."""

    model_config = ConfigDict(extra="forbid")

    tenant: TenantId | None = Field(None, description="Optional; must be the key's tenant.")
    deployment: DeploymentName = Field(
        description="A declared deployment the tenant may use.", examples=["credit_risk"]
    )
    model: ModelName | None = Field(
        None,
        description="name@alias or name/version of the deployment's registered model "
        "(models:/ prefix optional). Default: its serving model, <model>@<alias>.",
        examples=["credit_risk_default@champion", "credit_risk_default/3"],
    )
    feature_table: TableName | None = Field(
        None,
        description="A table the tenant may read; default: the deployment's validated table "
        "validated/<deployment>.",
    )
    partition: Day | None = Field(None, description="One day (or use start/end date).")
    start_date: Day | None = None
    end_date: Day | None = None
    priority: Priority | None = Field(None, description="Default: the tenant's.")
    output_table: TableName | None = Field(
        None, description="Under the tenant's output root; default predictions/<deployment>."
    )

    @model_validator(mode="after")
    def _one_range(self) -> "InferenceRequest":
        if self.partition and (self.start_date or self.end_date):
            raise ValueError("give either partition or start_date/end_date, not both")
        if bool(self.start_date) != bool(self.end_date):
            raise ValueError("give both start_date and end_date (or partition)")
        if self.start_date and self.end_date and self.start_date > self.end_date:
            raise ValueError(f"start_date {self.start_date} is after end_date {self.end_date}")
        return self

    @property
    def days(self) -> tuple[dt.date, dt.date] | None:
        """The first and last day asked for; None when the request names no days."""
        if self.partition:
            return self.partition, self.partition
        if self.start_date and self.end_date:
            return self.start_date, self.end_date
        return None


class JobView(BaseModel):
    """A job as the client sees it."""

    job_id: str
    tenant: str
    status: Literal["accepted", "queued", "started", "succeeded", "failed", "canceled"]
    priority: Priority
    deployment: str
    model: str
    feature_table: str
    start_date: dt.date | None
    end_date: dt.date | None
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
            deployment=r.deployment,
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
    """What the client API needs: the job store, the tenants and the declared deployments,
    plus request limits.

    A request may name days from its deployment's partition start to today (UTC) plus
    ``days_ahead``. Left out, ``deployments`` are read from the settings' deployments folder
    (``batch-inference.deployments-dir``) and ``days_ahead`` is
    ``batch-inference.api.partition-days-ahead``.
    """

    store: JobStore
    tenants: TenantDirectory
    max_days: int
    deployments: Mapping[str, Deployment] | None = None
    days_ahead: int | None = None

    def __post_init__(self) -> None:
        if self.deployments is None or self.days_ahead is None:
            from batch_inference_platform.config import load_settings
            from batch_inference_platform.lib.deployments.folder import read_deployments

            settings = load_settings()
            application = settings.application
            if self.deployments is None:
                declared = read_deployments(
                    settings.project_root,
                    application.deployments_dir,
                    lake_root=application.lake.root,
                )
                object.__setattr__(self, "deployments", declared)
            if self.days_ahead is None:
                object.__setattr__(self, "days_ahead", application.api.partition_days_ahead)
        declared = set(self.deployments or {})
        for tenant in self.tenants.tenants.values():
            undeclared = sorted(set(tenant.allowed_deployments) - declared)
            if undeclared:
                logger.warning(
                    "tenant %r may use deployments that are not declared: %s",
                    tenant.id,
                    ", ".join(undeclared),
                )

    def deployment(self, name: str) -> Deployment:
        """The declared deployment ``name``; 422 naming the declared ones otherwise."""
        assert self.deployments is not None
        found = self.deployments.get(name)
        if found is None:
            known = ", ".join(sorted(self.deployments)) or "none"
            raise Problem(
                422, "Invalid request", f"unknown deployment {name!r} (declared: {known})"
            )
        return found

    def day_range(self, deployment: Deployment) -> tuple[dt.date, dt.date]:
        """The first and the last day a request for ``deployment`` may name now."""
        assert self.days_ahead is not None
        start = deployment.partitioning.start
        assert start is not None, f"deployment {deployment.name} is partitioned without a start"
        today = dt.datetime.now(dt.UTC).date()
        return start.date(), today + dt.timedelta(days=self.days_ahead)


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


def _model(deployment: Deployment, text: str | None) -> str:
    """The model reference a request for ``deployment`` runs (``name@alias`` or
    ``name/version``): the deployment's serving model by default; one naming another model is
    refused with 422 naming both."""
    if text is None:
        return f"{deployment.model_name}@{deployment.alias}"
    try:
        reference = parse_model_reference(text.removeprefix(MODELS_URI))
    except ModelReferenceError as error:
        raise Problem(422, "Invalid request", str(error)) from error
    if reference.name != deployment.model_name:
        raise Problem(
            422,
            "Invalid request",
            f"model {reference.name!r} is not the model of deployment {deployment.name!r} "
            f"({deployment.model_name!r}): name a version or an alias of "
            f"{deployment.model_name}, or leave model out for "
            f"{deployment.model_name}@{deployment.alias}",
        )
    return str(reference)


def _days(
    service: JobsService, deployment: Deployment, days: tuple[dt.date, dt.date] | None
) -> tuple[dt.date, dt.date] | None:
    """The request's days, checked against ``deployment``'s partitions: required and within
    its partition start .. today + days ahead when it is partitioned; refused when it is not
    (an unpartitioned deployment scores its whole table)."""
    name, partitioning = deployment.name, deployment.partitioning
    if not partitioning.partitioned:
        if days is not None:
            raise Problem(
                422,
                "Invalid request",
                f"deployment {name!r} is not partitioned: a request scores its whole table, "
                "so leave out partition, start_date and end_date",
            )
        return None
    if days is None:
        raise Problem(
            422,
            "Invalid request",
            f"deployment {name!r} is partitioned by {partitioning.column} "
            f"({partitioning.kind.value}): give partition, or both start_date and end_date",
        )
    first, last = days
    if (last - first).days + 1 > service.max_days:
        raise Problem(
            422, "Invalid request", f"{first}..{last} is longer than {service.max_days} days"
        )
    earliest, latest = service.day_range(deployment)
    if first < earliest:
        raise Problem(
            422,
            "Invalid request",
            f"{first} is before the first partition {earliest} of deployment {name!r} "
            "(source.partition.start of its defs.yaml)",
        )
    if last > latest:
        raise Problem(
            422,
            "Invalid request",
            f"{last} is after the last day a request may name, {latest} (today + "
            f"{service.days_ahead} days: batch-inference.api.partition-days-ahead)",
        )
    return first, last


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
        deployment = service.deployment(body.deployment)
        try:
            tenant.deployment(deployment.name)
        except AccessDenied as error:
            raise Problem(403, "Forbidden", str(error)) from error
        model = _model(deployment, body.model)
        days = _days(service, deployment, body.days)
        feature_table = body.feature_table or f"validated/{deployment.name}"
        output = body.output_table or f"predictions/{deployment.name}"
        try:
            tenant.input_table(feature_table)
            tenant.output_uri(output)
        except AccessDenied as error:
            raise Problem(403, "Forbidden", str(error)) from error
        message = InferenceRequestMessage(
            job_id=str(uuid.uuid4()),
            tenant=tenant.id,
            deployment=deployment.name,
            model=model,
            feature_table=feature_table,
            start_date=days[0] if days else None,
            end_date=days[1] if days else None,
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
