"""Client jobs' status changes back to the client: the job store (what GET shows) and, through
its outbox, the status, output and error topics - so a client learns of completion without
polling. Deliveries are idempotent: a status already recorded adds nothing. Defined only while
Kafka is configured: the runs they follow are launched by ``client_request_sensor`` alone."""

import datetime as dt
from collections.abc import Sequence

import dagster as dg

from batch_inference_platform.defs.inference.client_jobs import client_inference_job
from batch_inference_platform.defs.metadata import TenantOutputMetadata
from batch_inference_platform.defs.monitoring.runs import run_materializations
from batch_inference_platform.defs.resources import ClientRequestsResource
from batch_inference_platform.lib.inbox.job_models import InvalidTransition
from batch_inference_platform.lib.messaging.schemas import (
    TERMINAL_STATUSES,
    ErrorMessage,
    JobStatus,
    OutputMessage,
    encode,
)

STATUS_SENSOR_INTERVAL = 5
MAX_ERROR_CHARS = 8000
"""Error text kept in an error message (Kafka and Event Hubs cap message sizes)."""


def _record(
    context: dg.RunStatusSensorContext,
    client_requests: ClientRequestsResource,
    status: JobStatus,
    *,
    detail: str | None = None,
    extra: Sequence[tuple[str, str, bytes]] = (),
) -> None:
    """Record ``status`` for the run's job; a terminal status seen before 'started' (the
    sensors run independently) records 'started' first, so clients always see the sequence
    accepted, queued, started, then the outcome."""
    run = context.dagster_run
    job_id, tenant = run.tags.get("job_id"), run.tags.get("tenant", "")
    if not job_id:
        return
    store = client_requests.store
    job = store.get(tenant, job_id)
    if job is None:
        context.log.warning(f"run {run.run_id}: job {job_id} of {tenant!r} is not in the store")
        return
    if job.status in TERMINAL_STATUSES:
        context.log.info(f"job {job_id} is already {job.status}; {status} not recorded")
        return
    if status in TERMINAL_STATUSES and job.status in ("accepted", "queued"):
        store.update_status(job_id, "started", dagster_run_id=run.run_id)
    try:
        store.update_status(job_id, status, dagster_run_id=run.run_id, detail=detail, extra=extra)
    except InvalidTransition as error:  # finished meanwhile: the later sensor recorded it
        context.log.info(f"job {job_id}: {error}")
        return
    with client_requests.relay() as relay:
        published = relay.publish_pending()
    context.log.info(f"job {job_id}: {status} ({published} messages published)")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dg.run_status_sensor(
    name="client_job_started",
    run_status=dg.DagsterRunStatus.STARTED,
    monitored_jobs=[client_inference_job],
    minimum_interval_seconds=STATUS_SENSOR_INTERVAL,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="A client job's run started: status 'started' to the job store and Kafka.",
)
def client_job_started(
    context: dg.RunStatusSensorContext, client_requests: ClientRequestsResource
) -> None:
    _record(context, client_requests, "started")


@dg.run_status_sensor(
    name="client_job_succeeded",
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[client_inference_job],
    minimum_interval_seconds=STATUS_SENSOR_INTERVAL,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="A client job succeeded: its results to batch-inference-output.",
)
def client_job_succeeded(
    context: dg.RunStatusSensorContext, client_requests: ClientRequestsResource
) -> None:
    run = context.dagster_run
    written = _output(context)
    output = OutputMessage(
        job_id=run.tags["job_id"],
        tenant=run.tags["tenant"],
        deployment=run.tags.get("deployment") or (written.deployment if written else None) or "",
        table=written.table_uri if written else "",
        partitions=list(written.partitions) if written else [],
        rows=written.rows if written else 0,
        model_name=written.model_name if written else "",
        model_version=written.model_version if written else 0,
        dagster_run_id=run.run_id,
        finished_at=_now(),
    )
    topic = client_requests.topics.output
    _record(
        context,
        client_requests,
        "succeeded",
        detail=f"{output.rows} rows in {output.table}",
        extra=[(topic, output.job_id, encode(output))],
    )


@dg.run_failure_sensor(
    name="client_job_failed",
    monitored_jobs=[client_inference_job],
    minimum_interval_seconds=STATUS_SENSOR_INTERVAL,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="A client job failed: the error and its metrics to batch-inference-errors.",
)
def client_job_failed(
    context: dg.RunFailureSensorContext, client_requests: ClientRequestsResource
) -> None:
    run = context.dagster_run
    step_failures = context.get_step_failure_events()
    failed_step = step_failures[0].step_key if step_failures else None
    message = (
        step_failures[0].step_failure_data.user_failure_data.description
        if step_failures and step_failures[0].step_failure_data.user_failure_data
        else None
    ) or (context.failure_event.message or "the run failed")
    stats = context.instance.get_run_stats(run.run_id)
    seconds = (stats.end_time or 0) - (stats.start_time or 0)
    error = ErrorMessage(
        job_id=run.tags["job_id"],
        tenant=run.tags["tenant"],
        dagster_run_id=run.run_id,
        error=message[:MAX_ERROR_CHARS],
        failed_step=failed_step,
        metrics={"run_seconds": round(max(seconds, 0.0), 3), "steps_failed": stats.steps_failed},
        at=_now(),
    )
    _record(
        context,
        client_requests,
        "failed",
        detail=message[:2000],
        extra=[(client_requests.topics.errors, error.job_id, encode(error))],
    )


@dg.run_status_sensor(
    name="client_job_canceled",
    run_status=dg.DagsterRunStatus.CANCELED,
    monitored_jobs=[client_inference_job],
    minimum_interval_seconds=STATUS_SENSOR_INTERVAL,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="A client job's run was cancelled: status 'canceled'.",
)
def client_job_canceled(
    context: dg.RunStatusSensorContext, client_requests: ClientRequestsResource
) -> None:
    _record(context, client_requests, "canceled", detail="the run was cancelled")


def _output(context: dg.RunStatusSensorContext) -> TenantOutputMetadata | None:
    """The record of the run's (latest) output-table materialization: table, partitions,
    rows, model; None when it wrote none."""
    for materialization in reversed(
        run_materializations(context.instance, context.dagster_run.run_id)
    ):
        record = TenantOutputMetadata.from_materialization(materialization)
        if record is not None:
            return record
    return None


JOB_STATUS_SENSORS = [
    client_job_started,
    client_job_succeeded,
    client_job_failed,
    client_job_canceled,
]
