"""The SLA report: how the platform's scoring runs of the last days measure against
monitoring.yml ``performance.sla-targets`` - a table in the UI and three asset checks, hourly.

What counts (see ``lib/sla.py`` for the figures themselves):

- **Runs**: scoring runs that finished (SUCCESS or FAILURE) within the window - runs of the
  jobs ``SlaTargetsResource.scoring_jobs`` names, or any run whose execution plan materializes
  ``predictions`` or a tenant output table (``tenants/...``) - whatever the job, e.g. a
  backfill or a materialization launched from the UI. Run time is the run's start to end
  (creation to last update if it never started).
- **Records of a succeeded run**: the ``dagster/row_count`` of its materializations of
  ``predictions`` and of tenant output tables, once per asset and partition (a partition's own
  ``rows`` in the ``partitions`` metadata when a backfill run reports the run-wide total).
- **Failed records of a failed run**: the rows of the partitions it was asked to score
  (``rows_in`` of the latest ``validated_features`` materialization of each partition named by
  its partition tags) when known; else the rows its own materializations reported before it
  failed; else one failed unit. All of them count as failed.
"""

import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import dagster as dg
import pydantic

from batch_inference_platform.config import MonitoringSettings
from batch_inference_platform.defs.inference.assets import PREDICTIONS_KEY
from batch_inference_platform.defs.inference.client_jobs import CLIENT_JOB, OUTPUT_ASSET_PREFIX
from batch_inference_platform.defs.inference.schedules import rescore_job, score_partition_job
from batch_inference_platform.defs.validation.assets import VALIDATED_KEY
from batch_inference_platform.lib.sla import (
    FAILURE,
    SUCCESS,
    JobCompletionTarget,
    RunRecord,
    SlaFigure,
    SlaReport,
    SlaTargets,
)
from batch_inference_platform.lib.sla import sla_report as compute_sla_report

SLA_REPORT_KEY = dg.AssetKey("sla_report")
SLA_CHECKS = {
    "job_completion_within_target": "job_completion",
    "throughput_meets_target": "throughput",
    "error_rate_below_target": "error_rate",
}
"""Check name -> the report's figure it judges."""
ROW_COUNT = "dagster/row_count"
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
_FINISHED = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE]


class SlaTargetsResource(dg.ConfigurableResource):
    """The SLA targets (``performance.sla-targets``), the window they are measured over and
    the jobs that count as scoring."""

    job_completion_quantile: float = pydantic.Field(ge=0, le=1)
    """Share of runs that must succeed within ``job_completion_within_seconds``."""
    job_completion_within_seconds: float = pydantic.Field(gt=0)
    data_throughput_per_hour: float = pydantic.Field(gt=0)
    """Records scored per hour of run time, at least."""
    error_rate: float = pydantic.Field(ge=0, le=1)
    """Failed records / all records, below this."""
    window_days: float = pydantic.Field(default=7.0, gt=0)
    scoring_jobs: list[str] = pydantic.Field(
        default_factory=lambda: [score_partition_job.name, rescore_job.name, CLIENT_JOB]
    )

    @classmethod
    def from_settings(
        cls, settings: MonitoringSettings, *, window_days: float = 7.0
    ) -> "SlaTargetsResource":
        """The targets monitoring.yml sets."""
        targets = settings.performance.sla_targets
        return cls(
            job_completion_quantile=targets.job_completion.quantile,
            job_completion_within_seconds=targets.job_completion.within.total_seconds(),
            data_throughput_per_hour=targets.data_throughput,
            error_rate=targets.error_rate,
            window_days=window_days,
        )

    @property
    def targets(self) -> SlaTargets:
        return SlaTargets(
            job_completion=JobCompletionTarget(
                quantile=self.job_completion_quantile,
                within=dt.timedelta(seconds=self.job_completion_within_seconds),
            ),
            data_throughput=self.data_throughput_per_hour,
            error_rate=self.error_rate,
        )

    @property
    def window(self) -> dt.timedelta:
        return dt.timedelta(days=self.window_days)


@dg.asset(
    key=SLA_REPORT_KEY,
    group_name="operations",
    description=(
        "How the scoring runs of the last days (window: SlaTargetsResource.window_days) meet "
        "performance.sla-targets: share of runs succeeded in time, records scored per hour of "
        "run time, failed-record rate."
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
    """The scoring runs that finished since ``since``, with their records (module docstring)."""
    history, planned = [], {}
    for record in instance.get_run_records(
        filters=dg.RunsFilter(statuses=_FINISHED, updated_after=since)
    ):
        run = record.dagster_run
        if not _is_scoring(instance, run, scoring_jobs, planned):
            continue
        start = record.start_time or record.create_timestamp.timestamp()
        end = record.end_time or record.update_timestamp.timestamp()
        scored = _scored_rows(instance, run.run_id)
        succeeded = run.status == dg.DagsterRunStatus.SUCCESS
        failed = 0 if succeeded else (_requested_rows(instance, run, end) or scored or 1)
        history.append(
            RunRecord(
                job_name=run.job_name,
                status=SUCCESS if succeeded else FAILURE,
                start=dt.datetime.fromtimestamp(start, dt.UTC),
                end=dt.datetime.fromtimestamp(end, dt.UTC),
                records=scored if succeeded else failed,
                failed_records=failed,
            )
        )
    return history


def _is_scoring(
    instance: dg.DagsterInstance,
    run: dg.DagsterRun,
    scoring_jobs: Sequence[str],
    planned: dict[str, bool],
) -> bool:
    """A run of a scoring job, or one whose plan materializes ``predictions`` or a tenant
    table (``planned`` caches the answer per execution-plan snapshot)."""
    if run.job_name in scoring_jobs:
        return True
    snapshot_id = run.execution_plan_snapshot_id
    if snapshot_id is None:
        return False
    if snapshot_id not in planned:
        plan = instance.get_execution_plan_snapshot(snapshot_id)
        planned[snapshot_id] = any(
            _is_scored_table(output.properties.asset_key)
            for step in plan.steps
            for output in step.outputs
            if output.properties is not None and output.properties.asset_key is not None
        )
    return planned[snapshot_id]


def _is_scored_table(key: dg.AssetKey) -> bool:
    return key == PREDICTIONS_KEY or key.path[0] == OUTPUT_ASSET_PREFIX


def _scored_rows(instance: dg.DagsterInstance, run_id: str) -> int:
    """Rows the run's ``predictions`` / tenant-table materializations report, once per asset
    and partition."""
    rows: dict[tuple[dg.AssetKey, str | None], int] = {}
    for materialization in _materializations(instance, run_id):
        key = materialization.asset_key
        if _is_scored_table(key):
            count = _partition_rows(materialization.metadata, materialization.partition, "rows")
            rows[(key, materialization.partition)] = count or 0
    return sum(rows.values())


def _requested_rows(instance: dg.DagsterInstance, run: dg.DagsterRun, end: float) -> int:
    """Rows of the partitions a run was asked to score, from the latest ``validated_features``
    materialization of each (before the run ended); 0 when none of them is known."""
    total = 0
    for partition in _requested_partitions(run.tags):
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(
                asset_key=VALIDATED_KEY, asset_partitions=[partition], before_timestamp=end
            ),
            limit=1,
        ).records
        materialization = records[0].asset_materialization if records else None
        if materialization is not None:
            total += _partition_rows(materialization.metadata, partition, "rows_in") or 0
    return total


def _requested_partitions(tags: Mapping[str, str]) -> list[str]:
    """The partition keys a run's tags name (one, or a range of daily partitions)."""
    if tags.get("dagster/partition"):
        return [tags["dagster/partition"]]
    try:
        first = dt.date.fromisoformat(tags.get(RANGE_START, ""))
        last = dt.date.fromisoformat(tags.get(RANGE_END, ""))
    except ValueError:
        return []
    return [(first + dt.timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]


def _partition_rows(metadata: Mapping[str, Any], partition: str | None, field: str) -> int | None:
    """A partition's rows: its own ``field`` in the ``partitions`` metadata (runs over several
    partitions report run-wide totals elsewhere), else ``dagster/row_count``."""
    per_partition = metadata.get("partitions")
    values = getattr(per_partition, "value", None)
    if partition and isinstance(values, dict) and isinstance(values.get(partition), dict):
        count = values[partition].get(field)
        if isinstance(count, int):
            return count
    count = getattr(metadata.get(ROW_COUNT), "value", None)
    return count if isinstance(count, int) else None


def _materializations(
    instance: dg.DagsterInstance, run_id: str
) -> Iterable[dg.AssetMaterialization]:
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
    ).records
    for record in records:
        materialization = record.asset_materialization
        if materialization is not None:
            yield materialization


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


def _report_metadata(report: SlaReport) -> dict[str, Any]:
    quantile = report.completion_quantile_seconds
    return {
        "report": dg.MetadataValue.md(report.markdown()),
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


def _number(value: float) -> dg.MetadataValue:
    """A float for the UI; infinity (nothing measured / never completed) as text."""
    return dg.MetadataValue.text("inf") if math.isinf(value) else dg.MetadataValue.float(value)
