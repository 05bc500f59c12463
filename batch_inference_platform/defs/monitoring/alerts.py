"""Job-failure alerts: when a job of this code location has failed ``threshold`` times in a
row, the people on call hear about it on every channel ``alerts.job-failure.notification``
lists (monitoring.yml) - what failed, of which deployment, where, when, and a link to the run.

The deployment is the run's ``deployment`` tag (re-score runs of the model update sensor),
else its job's ``<name>__`` prefix, else the one deployment whose assets (``<name>/...``) the
run set out to materialize."""

import datetime as dt
from collections.abc import Sequence

import dagster as dg

from batch_inference_platform.defs.monitoring.runs import (
    deployment_of_job,
    planned_asset_keys,
    run_deployment,
)
from batch_inference_platform.defs.resources import AlertsResource
from batch_inference_platform.lib.alerts import Alert, run_link

WHERE_TAGS = {
    "tenant": "tenant",
    "job_id": "client_job",
    "dagster/partition": "partition",
    "dagster/asset_partition_range_start": "partitions_from",
    "dagster/asset_partition_range_end": "partitions_to",
    "dagster/backfill": "backfill",
}
"""Run tags that say where a failure happened, and the label each gets in the alert."""
STREAK_LOOKBACK = 100
"""Earlier runs of the job read to count a failure streak."""
_FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE]


def consecutive_failures(
    instance: dg.DagsterInstance, record: dg.RunRecord, *, lookback: int = STREAK_LOOKBACK
) -> int:
    """How many runs of the failed run's job have failed in a row, ending with it (counted as a
    failure): earlier runs that finished, newest first, until the first success. Canceled and
    unfinished runs neither count nor break the streak."""
    run = record.dagster_run
    earlier = instance.get_run_records(
        filters=dg.RunsFilter(
            job_name=run.job_name, statuses=_FINISHED, created_before=record.create_timestamp
        ),
        limit=lookback,
    )
    streak = 1
    for previous in earlier:
        if previous.dagster_run.status != dg.DagsterRunStatus.FAILURE:
            break
        streak += 1
    return streak


def failure_alert(
    run: dg.DagsterRun,
    failure_event: dg.DagsterEvent,
    step_failures: Sequence[dg.DagsterEvent],
    *,
    dagster_url: str,
    at: dt.datetime,
    streak: int = 1,
    deployment: str | None = None,
) -> Alert:
    """The alert for a failed run of ``deployment``: its failed steps and their errors, where
    and when. The title names the deployment unless the job's name already does."""
    steps = tuple(event.step_key for event in step_failures if event.step_key)
    errors = [(event.step_key, _step_error(event)) for event in step_failures]
    if len(errors) == 1:
        error = errors[0][1]
    elif errors:
        error = "\n".join(f"{step}: {message}" for step, message in errors)
    else:
        error = _run_error(failure_event)
    where: dict[str, str] = {}
    if run.remote_job_origin is not None:
        where["code_location"] = run.remote_job_origin.location_name
    where |= {label: run.tags[tag] for tag, label in WHERE_TAGS.items() if run.tags.get(tag)}
    title = f"{run.job_name} failed" + (f" {streak} times in a row" if streak > 1 else "")
    if deployment and deployment_of_job(run.job_name) != deployment:
        title = f"{deployment}: {title}"
    return Alert(
        title=title,
        job_name=run.job_name,
        run_id=run.run_id,
        error=error,
        link=run_link(dagster_url, run.run_id),
        at=at,
        failed_steps=steps,
        where=where,
        severity="critical" if streak > 1 else "error",
        deployment=deployment,
    )


@dg.run_failure_sensor(
    name="job_failure_alerts",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "A job failed (alerts.job-failure.threshold times in a row): alert the channels in "
        "alerts.job-failure.notification with the failed steps, error and a link to the run."
    ),
)
def job_failure_alerts(
    context: dg.RunFailureSensorContext, alerts: AlertsResource
) -> dg.SkipReason | None:
    run = context.dagster_run
    record = context.instance.get_run_record_by_id(run.run_id)
    streak = consecutive_failures(context.instance, record) if record is not None else 1
    if streak < alerts.threshold:
        return dg.SkipReason(
            f"{run.job_name} failed {streak} time(s) in a row; alerting from {alerts.threshold}"
        )
    ended = record.end_time if record is not None else None
    alert = failure_alert(
        run,
        context.failure_event,
        context.get_step_failure_events(),
        dagster_url=alerts.dagster_url,
        at=dt.datetime.fromtimestamp(ended, dt.UTC) if ended else dt.datetime.now(dt.UTC),
        streak=streak,
        deployment=run_deployment(run, asset_keys=planned_asset_keys(context.instance, run)),
    )
    outcome = alerts.alert(alert, logger=context.log)
    if not any(error is None for error in outcome.values()):
        context.log.error(f"the alert for run {run.run_id} reached no channel: {outcome}")
    return None


def _step_error(event: dg.DagsterEvent) -> str:
    """What went wrong in a step: a ``dg.Failure``'s description, else the root exception."""
    data = event.step_failure_data
    if data.user_failure_data is not None and data.user_failure_data.description:
        return data.user_failure_data.description
    if data.error is None:
        return event.message or "the step failed"
    error = data.error
    while error.cause is not None:
        error = error.cause
    return error.message.strip()


def _run_error(event: dg.DagsterEvent) -> str:
    """Why a run failed outside any step (e.g. its worker could not start)."""
    message = event.message or "the run failed"
    data = event.event_specific_data
    error = getattr(data, "error", None)
    while error is not None and error.cause is not None:
        error = error.cause
    return f"{message}\n{error.message.strip()}" if error is not None else message
