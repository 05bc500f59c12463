"""Client requests from ``batch-inference-input`` become runs of ``client_inference_job``.

The sensor reads the topic by partition offsets kept in its cursor, which the daemon stores
atomically with the run requests: nothing is skipped, and a message delivered twice starts
nothing new because the run key is the job id. Only jobs accepted by the API (present in the
job store) run; a cancelled job's queued or running run is cancelled here too. Each run is
tagged with its tenant, job id, deployment and ``dagster/priority``.

It is defined only while Kafka is configured (``definitions.kafka_sensors``): it reads nothing
but the topic, and jobs the API accepts without a broker wait in its outbox until one is set.
"""

import datetime as dt
import json

import dagster as dg

from batch_inference_platform.defs.inference.client_jobs import client_inference_job
from batch_inference_platform.defs.resources import ClientRequestsResource
from batch_inference_platform.lib.inbox.job_store import JobStore
from batch_inference_platform.lib.messaging.kafka import read_batch
from batch_inference_platform.lib.messaging.schemas import (
    TERMINAL_STATUSES,
    InferenceRequestMessage,
    MessageSchemaError,
    decode_request,
)
from batch_inference_platform.lib.tenants import PRIORITY_TAG_VALUE

MAX_MESSAGES = 200
ACTIVE = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


@dg.sensor(
    name="client_request_sensor",
    job=client_inference_job,
    minimum_interval_seconds=5,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Launches a run per accepted client request on batch-inference-input "
    "(run key = job id; tagged with the tenant, deployment and dagster/priority).",
)
def client_request_sensor(
    context: dg.SensorEvaluationContext, client_requests: ClientRequestsResource
) -> dg.SensorResult | dg.SkipReason:
    kafka = client_requests.kafka
    if not kafka.bootstrap_servers:
        return dg.SkipReason("batch-inference.kafka.bootstrap-servers is not set")
    store = client_requests.store
    _cancel_runs_of_cancelled_jobs(context, store)
    cursor = json.loads(context.cursor) if context.cursor else {}
    offsets = {int(p): int(o) for p, o in cursor.get("offsets", {}).items()}
    records, offsets = read_batch(
        kafka,
        client_requests.topics.input,
        offsets,
        max_messages=MAX_MESSAGES,
        timeout_seconds=2,
    )
    accepted: list[InferenceRequestMessage] = []
    for record in records:
        where = f"{record.topic}[{record.partition}]@{record.offset}"
        try:
            message = decode_request(record.value)
        except MessageSchemaError as error:
            context.log.warning(f"{where}: skipped, not a valid request: {error}")
            continue
        job = store.get(message.tenant, message.job_id)
        if job is None:
            context.log.warning(f"{where}: skipped job {message.job_id}: not accepted by the API")
            continue
        if job.status in TERMINAL_STATUSES:
            detail = job.detail or "no detail"
            context.log.info(f"{where}: job {message.job_id} is {job.status} ({detail}): no run")
            continue
        if job.request != message:
            context.log.warning(
                f"{where}: skipped job {message.job_id}: the message differs from the request "
                "the API accepted"
            )
            continue
        if job.status == "accepted":
            store.update_status(job.job_id, "queued")
        accepted.append(job.request)  # run what the API accepted, never what a message says
    # Urgent first: the run queue orders by dagster/priority, and so does submission.
    accepted.sort(key=lambda m: -PRIORITY_TAG_VALUE[m.priority])
    new_cursor = json.dumps({"offsets": {str(p): o for p, o in sorted(offsets.items())}})
    return dg.SensorResult(
        run_requests=[_run_request(message) for message in accepted], cursor=new_cursor
    )


def _run_request(message: InferenceRequestMessage) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=message.job_id,
        run_config={
            "ops": {
                "score_client_request": {
                    "config": {
                        "job_id": message.job_id,
                        "tenant": message.tenant,
                        "deployment": message.deployment,
                        "model": message.model,
                        "feature_table": message.feature_table,
                        "start_date": _iso(message.start_date),
                        "end_date": _iso(message.end_date),
                        "output_table": message.output_table,
                    }
                }
            }
        },
        tags={
            "tenant": message.tenant,
            "job_id": message.job_id,
            "deployment": message.deployment,
            "dagster/priority": str(PRIORITY_TAG_VALUE[message.priority]),
        },
    )


def _iso(day: dt.date | None) -> str | None:
    return day.isoformat() if day else None


def _cancel_runs_of_cancelled_jobs(context: dg.SensorEvaluationContext, store: JobStore) -> None:
    """A job cancelled through the API after its run was queued or started: cancel the run."""
    runs = context.instance.get_runs(
        filters=dg.RunsFilter(job_name=client_inference_job.name, statuses=ACTIVE)
    )
    for run in runs:
        job = store.get(run.tags.get("tenant", ""), run.tags.get("job_id", ""))
        if job is not None and job.status == "canceled":
            context.log.info(f"cancelling run {run.run_id} of cancelled job {job.job_id}")
            context.instance.run_coordinator.cancel_run(run.run_id)
