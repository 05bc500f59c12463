"""Every finished run's metrics and trace (rows, duration, throughput, records per hour,
errors) through OpenTelemetry - to Application Insights in Azure, to local files elsewhere -
each with the deployment it belongs to and the rows it scored of each deployment."""

import datetime as dt

import dagster as dg

from batch_inference_platform.defs.monitoring.runs import (
    planned_asset_keys,
    run_deployment,
    run_materializations,
    scored_rows,
)
from batch_inference_platform.defs.resources import TelemetryResource
from batch_inference_platform.lib.telemetry import RunFigures


def run_figures(context: dg.RunStatusSensorContext, status: str) -> RunFigures:
    """Rows per deployment, timing and errors of the sensor's run, from the instance: the
    rows of the materializations carrying a predictions or tenant-output record."""
    run = context.dagster_run
    instance = context.instance
    stats = instance.get_run_stats(run.run_id)
    rows = scored_rows(run_materializations(instance, run.run_id))
    deployment = run_deployment(run, scored=rows, asset_keys=planned_asset_keys(instance, run))
    now = dt.datetime.now(dt.UTC)
    start = dt.datetime.fromtimestamp(stats.start_time, dt.UTC) if stats.start_time else now
    end = dt.datetime.fromtimestamp(stats.end_time, dt.UTC) if stats.end_time else now
    attributes = {k: v for k, v in run.tags.items() if k in ("tenant", "model", "model_version")}
    return RunFigures(
        job=run.job_name,
        run_id=run.run_id,
        status=status,
        start=start,
        end=end,
        errors=stats.steps_failed,
        attributes=attributes,
        rows_by_deployment=rows,
        deployment=deployment,
    )


@dg.run_status_sensor(
    name="run_metrics_on_success",
    run_status=dg.DagsterRunStatus.SUCCESS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Exports each successful run's metrics and trace (OpenTelemetry).",
)
def run_metrics_on_success(
    context: dg.RunStatusSensorContext, telemetry: TelemetryResource
) -> None:
    telemetry.telemetry().record_run(run_figures(context, "success"))


@dg.run_failure_sensor(
    name="run_metrics_on_failure",
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Exports each failed run's metrics and trace (OpenTelemetry).",
)
def run_metrics_on_failure(
    context: dg.RunFailureSensorContext, telemetry: TelemetryResource
) -> None:
    telemetry.telemetry().record_run(run_figures(context, "failure"))
