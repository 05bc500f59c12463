"""The SLA report: how the platform's scoring runs of the last days measure against
monitoring.yml ``performance.sla-targets`` - a table in the UI and three asset checks, hourly.

What counts (see ``lib/sla.py`` for the figures themselves), for every deployment:

- **Runs**: scoring runs that finished (SUCCESS or FAILURE) within the window - runs of a
  deployment's ``<name>__score_partition_job`` or ``<name>__rescore_job``, of a job
  ``SlaTargetsResource.scoring_jobs`` names (the client job), or any run that materialized a
  deployment's predictions or a tenant output table (a materialization carrying the
  ``PredictionsMetadata`` or ``TenantOutputMetadata`` record, ``defs/metadata.py``) - whatever
  the job, e.g. a backfill or a materialization launched from the UI -, or a failed run that
  recorded nothing but set out to materialize a deployment's ``<name>/predictions``. Run time
  is the run's start to end (creation to last update if it never started).
- **Whose run**: its ``deployment`` tag, else its job's ``<name>__`` prefix, else the
  deployment of the predictions it recorded, else of the assets it planned; client jobs'
  runs are ``tenants``.
- **Records of a succeeded run**: the rows of its predictions and tenant-table
  materializations, once per asset and partition (a partition's own rows when a backfill run
  reports the run-wide total).
- **Failed records of a failed run**: the rows of the partitions it was asked to score
  (``rows_in`` of the latest ``<deployment>/validated_features`` materialization of each
  partition named by its partition tags) when known; else the rows its own materializations
  reported before it failed; else one failed unit. All of them count as failed.

The report has these figures per deployment (a table in the metadata) as well as in total.
"""

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg

from batch_inference_platform.defs.metadata import ValidatedMetadata
from batch_inference_platform.defs.monitoring.runs import (
    TENANTS,
    is_deployment_scoring_job,
    planned_asset_keys,
    planned_predictions,
    run_deployment,
    run_materializations,
    scored_rows,
)
from batch_inference_platform.defs.resources import SlaTargetsResource
from batch_inference_platform.defs.resources.client_requests import CLIENT_JOB
from batch_inference_platform.defs.scope import PLATFORM_GROUP
from batch_inference_platform.lib.sla import (
    FAILURE,
    SUCCESS,
    RunRecord,
    SlaFigure,
    SlaReport,
)
from batch_inference_platform.lib.sla import sla_report as compute_sla_report

SLA_REPORT_KEY = dg.AssetKey("sla_report")
SLA_CHECKS = {
    "job_completion_within_target": "job_completion",
    "throughput_meets_target": "throughput",
    "error_rate_below_target": "error_rate",
}
"""Check name -> the report's figure it judges."""
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
_FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE]


@dg.asset(
    key=SLA_REPORT_KEY,
    group_name=PLATFORM_GROUP,
    description=(
        "How the scoring runs of every deployment and the client jobs of the last days "
        "(window: SlaTargetsResource.window_days) meet performance.sla-targets: share of runs "
        "succeeded in time, records scored per hour of run time, failed-record rate - in total "
        "and per deployment."
    ),
    check_specs=[
        dg.AssetCheckSpec(name, asset=SLA_REPORT_KEY, blocking=False, description=description)
        for name, description in {
            "job_completion_within_target": "Enough runs succeeded within the time target.",
            "throughput_meets_target": "Records scored per hour of run time meet the target.",
            "error_rate_below_target": "Failed records stay below the error-rate target.",
        }.items()
    ],
)
def sla_report(
    context: dg.AssetExecutionContext, sla_targets: SlaTargetsResource
) -> dg.MaterializeResult:
    until = dt.datetime.now(dt.UTC)
    runs = run_history(
        context.instance, since=until - sla_targets.window, scoring_jobs=sla_targets.scoring_jobs
    )
    report = compute_sla_report(runs, sla_targets.targets, sla_targets.window, until=until)
    context.log.info(report.markdown())
    return dg.MaterializeResult(
        metadata=_report_metadata(report),
        check_results=[
            _check(name, getattr(report, figure)) for name, figure in SLA_CHECKS.items()
        ],
    )


sla_report_job = dg.define_asset_job(
    "sla_report_job",
    selection=dg.AssetSelection.assets(SLA_REPORT_KEY),
    description="Recompute the SLA report and its checks.",
)

sla_report_schedule = dg.ScheduleDefinition(
    name="sla_report_schedule",
    cron_schedule="0 * * * *",
    job=sla_report_job,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Refreshes the SLA report (and its checks) every hour.",
)


def run_history(
    instance: dg.DagsterInstance, *, since: dt.datetime, scoring_jobs: Sequence[str]
) -> list[RunRecord]:
    """The scoring runs that finished since ``since``, each with its deployment and records
    (module docstring)."""
    history: list[RunRecord] = []
    plans: dict[str, list[dg.AssetKey]] = {}
    for record in instance.get_run_records(
        filters=dg.RunsFilter(statuses=_FINISHED, updated_after=since)
    ):
        run = record.dagster_run
        scored = scored_rows(run_materializations(instance, run.run_id))
        by_job = run.job_name in scoring_jobs or is_deployment_scoring_job(run.job_name)
        planned = None
        if not scored and not by_job:
            if run.status != dg.DagsterRunStatus.FAILURE:
                continue
            planned = planned_predictions(_planned(instance, run, plans))
            if planned is None:
                continue
        deployment = planned or _deployment(instance, run, scored)
        start = record.start_time or record.create_timestamp.timestamp()
        end = record.end_time or record.update_timestamp.timestamp()
        rows = sum(scored.values())
        succeeded = run.status == dg.DagsterRunStatus.SUCCESS
        failed = 0
        if not succeeded:
            requested = _requested_rows(instance, run, deployment, end) if deployment else 0
            failed = requested or rows or 1
        history.append(
            RunRecord(
                job_name=run.job_name,
                status=SUCCESS if succeeded else FAILURE,
                start=dt.datetime.fromtimestamp(start, dt.UTC),
                end=dt.datetime.fromtimestamp(end, dt.UTC),
                records=rows if succeeded else failed,
                failed_records=failed,
                deployment=deployment or "",
            )
        )
    return history


def _deployment(
    instance: dg.DagsterInstance, run: dg.DagsterRun, scored: Mapping[str, int]
) -> str | None:
    """Whose run: one deployment's (``runs.run_deployment``), ``tenants`` for client jobs,
    or the deployments it scored joined with ``+`` (a run over several)."""
    if run.job_name == CLIENT_JOB or (scored and set(scored) == {TENANTS}):
        return TENANTS
    found = run_deployment(run, scored=scored)
    if found is None and not scored:
        found = run_deployment(run, asset_keys=planned_asset_keys(instance, run))
    if found is None and scored:
        found = "+".join(sorted(scored))
    return found


def _planned(
    instance: dg.DagsterInstance,
    run: dg.DagsterRun,
    plans: dict[str, list[dg.AssetKey]],
) -> list[dg.AssetKey]:
    """The assets the run planned (``plans`` caches them per execution-plan snapshot)."""
    snapshot = run.execution_plan_snapshot_id
    if snapshot is None or run.asset_selection:
        return planned_asset_keys(instance, run)
    if snapshot not in plans:
        plans[snapshot] = planned_asset_keys(instance, run)
    return plans[snapshot]


def _requested_rows(
    instance: dg.DagsterInstance, run: dg.DagsterRun, deployment: str, end: float
) -> int:
    """Rows of the partitions a run was asked to score, from the latest materialization of
    the deployment's ``validated_features`` for each (before the run ended); 0 when none of
    them is known."""
    key = dg.AssetKey([deployment, "validated_features"])
    partitions = _requested_partitions(run.tags)
    total = 0
    for partition in partitions or [None]:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(
                asset_key=key,
                asset_partitions=[partition] if partition is not None else None,
                before_timestamp=end,
            ),
            limit=1,
        ).records
        materialization = records[0].asset_materialization if records else None
        if materialization is not None:
            rows = ValidatedMetadata.from_materialization(materialization).rows_in_of(partition)
            total += rows or 0
    return total


MAX_RANGE = 10_000
"""Partitions read of a range run at most (a range of hourly partitions can be long)."""
_HOURLY = "%Y-%m-%d-%H:%M"


def _requested_partitions(tags: Mapping[str, str]) -> list[str]:
    """The partition keys a run's tags name: one, or a range of daily (``2026-11-02``) or
    hourly (``2026-11-02-06:00``) partitions; none for a run over a whole table."""
    if tags.get("dagster/partition"):
        return [tags["dagster/partition"]]
    first, last = tags.get(RANGE_START, ""), tags.get(RANGE_END, "")
    for shape, step in (("%Y-%m-%d", dt.timedelta(days=1)), (_HOURLY, dt.timedelta(hours=1))):
        try:
            start, stop = dt.datetime.strptime(first, shape), dt.datetime.strptime(last, shape)
        except ValueError:
            continue
        keys = []
        while start <= stop and len(keys) < MAX_RANGE:
            keys.append(start.strftime(shape))
            start += step
        return keys
    return []


def _check(name: str, figure: SlaFigure) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=name,
        asset_key=SLA_REPORT_KEY,
        passed=figure.passed,
        severity=dg.AssetCheckSeverity.WARN,
        description=figure.explanation,
        metadata={
            "value": _number(figure.value),
            "target": _number(figure.target),
            "unit": figure.unit,
            "explanation": figure.explanation,
        },
    )


DEPLOYMENT_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("deployment", "string", description="Deployment name, or tenants."),
        dg.TableColumn("runs", "int"),
        dg.TableColumn("succeeded", "int"),
        dg.TableColumn("failed", "int"),
        dg.TableColumn("completed_in_time", "int"),
        dg.TableColumn("records", "int"),
        dg.TableColumn("failed_records", "int"),
        dg.TableColumn("run_hours", "float"),
        dg.TableColumn("job_completion_share", "float"),
        dg.TableColumn("throughput_records_per_hour", "float"),
        dg.TableColumn("error_rate", "float"),
        dg.TableColumn("all_targets_met", "bool"),
    ]
)


def _deployment_rows(report: SlaReport) -> list[dg.TableRecord]:
    return [
        dg.TableRecord(
            {
                "deployment": name,
                "runs": part.runs,
                "succeeded": part.succeeded,
                "failed": part.failed,
                "completed_in_time": part.completed_in_time,
                "records": part.records,
                "failed_records": part.failed_records,
                "run_hours": round(part.run_hours, 4),
                "job_completion_share": _finite(part.job_completion.value),
                "throughput_records_per_hour": _finite(part.throughput.value),
                "error_rate": _finite(part.error_rate.value),
                "all_targets_met": part.passed,
            }
        )
        for name, part in report.deployments.items()
    ]


def _report_metadata(report: SlaReport) -> dict[str, Any]:
    quantile = report.completion_quantile_seconds
    return {
        "report": dg.MetadataValue.md(report.markdown()),
        "deployments": dg.MetadataValue.table(_deployment_rows(report), schema=DEPLOYMENT_SCHEMA),
        "window_days": report.window.total_seconds() / 86400,
        "runs": report.runs,
        "succeeded": report.succeeded,
        "failed": report.failed,
        "completed_in_time": report.completed_in_time,
        "records": report.records,
        "failed_records": report.failed_records,
        "run_hours": round(report.run_hours, 4),
        "job_completion_share": _number(report.job_completion.value),
        "completion_quantile_seconds": _number(quantile if quantile is not None else math.inf),
        "throughput_records_per_hour": _number(report.throughput.value),
        "error_rate": _number(report.error_rate.value),
        "all_targets_met": report.passed,
    }


def _finite(value: float) -> float | None:
    """A float a table cell holds (JSON has no infinity): None for infinite throughput."""
    return None if math.isinf(value) else round(value, 6)


def _number(value: float) -> dg.MetadataValue:
    """A float for the UI; infinity (nothing measured / never completed) as text."""
    return dg.MetadataValue.text("inf") if math.isinf(value) else dg.MetadataValue.float(value)
