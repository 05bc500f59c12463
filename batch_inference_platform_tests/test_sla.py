"""The SLA report: the figures over crafted run histories (each target broken on its own),
and the ``sla_report`` asset with its three checks over a small real run history."""

import datetime as dt
from collections.abc import Iterator

import dagster as dg
import pytest

from batch_inference_platform.config import load_settings
from batch_inference_platform.defs.metadata import PartitionFigures, PredictionsMetadata
from batch_inference_platform.defs.monitoring.sla import SLA_CHECKS, sla_report, sla_report_schedule
from batch_inference_platform.defs.resources import SlaTargetsResource, from_settings
from batch_inference_platform.lib.sla import RunRecord, SlaTargets
from batch_inference_platform.lib.sla import sla_report as compute

NOW = dt.datetime(2026, 11, 28, 12, tzinfo=dt.UTC)
WEEK = dt.timedelta(days=7)
ROWS = 100_000
DAILY = dg.DailyPartitionsDefinition(start_date="2026-11-01")


@pytest.fixture(scope="module")
def targets() -> SlaTargets:
    """monitoring.yml as shipped: 90% < 1 h, 1M records/hour, error rate < 0.1%."""
    return from_settings.sla_targets(load_settings()).targets


def run(
    minutes: float,
    records: int = 1_000_000,
    *,
    status: str = "SUCCESS",
    failed: int = 0,
    ended_hours_ago: float = 1,
) -> RunRecord:
    end = NOW - dt.timedelta(hours=ended_hours_ago)
    start = end - dt.timedelta(minutes=minutes)
    return RunRecord("score_partition_job", status, start, end, records, failed)


def verdicts(runs: list[RunRecord], targets: SlaTargets) -> tuple[bool, bool, bool]:
    report = compute(runs, targets, WEEK, until=NOW)
    return report.job_completion.passed, report.throughput.passed, report.error_rate.passed


# --------------------------------------------------------------------------- figures


def test_a_history_that_meets_every_target(targets: SlaTargets) -> None:
    runs = [run(30) for _ in range(20)]
    report = compute(runs, targets, WEEK, until=NOW)
    assert report.passed
    assert report.job_completion.value == 1.0
    assert report.throughput.value == pytest.approx(2_000_000)  # 20M records in 10 h
    assert report.error_rate.value == 0.0
    assert (report.runs, report.succeeded, report.failed, report.records) == (20, 20, 0, 20_000_000)
    assert report.completion_quantile_seconds == 1800
    assert (
        "20 of 20 finished runs (100.0%) succeeded within 1 hour in the last 7 days"
        in report.job_completion.explanation
    )


def test_slow_runs_break_job_completion_only(targets: SlaTargets) -> None:
    # 3 of 20 runs take 90 minutes (scoring 3M records each, so throughput holds): 85% < 90%.
    runs = [run(30) for _ in range(17)] + [run(90, 3_000_000) for _ in range(3)]
    assert verdicts(runs, targets) == (False, True, True)
    report = compute(runs, targets, WEEK, until=NOW)
    assert report.job_completion.value == pytest.approx(0.85)
    assert report.completed_in_time == 17
    assert report.completion_quantile_seconds == 5400
    assert "below the 90% target" in report.job_completion.explanation


def test_low_throughput_breaks_throughput_only(targets: SlaTargets) -> None:
    runs = [run(30, 400_000) for _ in range(20)]  # 8M records in 10 h
    assert verdicts(runs, targets) == (True, False, True)
    report = compute(runs, targets, WEEK, until=NOW)
    assert report.throughput.value == pytest.approx(800_000)
    assert "below 1,000,000 records/hour" in report.throughput.explanation


def test_a_failed_run_breaks_the_error_rate_only(targets: SlaTargets) -> None:
    # 20 good runs + one that failed after 1 minute with 100k records: 95% completed in time,
    # 20M records in 10 h 1 min, but 100k of 20.1M records (0.5%) failed.
    runs = [run(30) for _ in range(20)] + [run(1, 100_000, status="FAILURE")]
    assert verdicts(runs, targets) == (True, True, False)
    report = compute(runs, targets, WEEK, until=NOW)
    assert (report.failed, report.failed_records, report.records) == (1, 100_000, 20_100_000)
    assert report.error_rate.value == pytest.approx(100_000 / 20_100_000)
    assert report.throughput.value == pytest.approx(20_000_000 / (10 + 1 / 60))


def test_the_error_rate_must_stay_below_its_target(targets: SlaTargets) -> None:
    at_limit = [run(30, 1_000_000, failed=1_000)]  # exactly 0.1%
    assert verdicts(at_limit, targets)[2] is False
    below = [run(30, 1_000_000, failed=999)]
    assert verdicts(below, targets)[2] is True


def test_an_empty_history_passes_vacuously_and_says_so(targets: SlaTargets) -> None:
    old = [run(30, status="FAILURE", ended_hours_ago=24 * 8)]  # outside the window
    report = compute(old, targets, WEEK, until=NOW)
    assert report.passed
    assert report.runs == 0
    for figure in report.figures:
        assert "passes vacuously" in figure.explanation
    assert "| job completion |" in report.markdown()


# --------------------------------------------------------------------------- the asset

CREDIT, CHURN = "credit_risk", "churn"
HOURLY = dg.HourlyPartitionsDefinition(start_date="2026-11-01-00:00")
ROWS_IN = 50_000


class Scoring(dg.Config):
    rows: int = ROWS
    """Rows scored per partition."""
    fail: bool = False


def validated_asset(deployment: str, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    """``<deployment>/validated_features``: ``ROWS_IN`` rows read per partition."""

    @dg.asset(key=[deployment, "validated_features"], partitions_def=partitions)
    def validated(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        keys = context.partition_keys
        per_partition = {key: {"rows_in": ROWS_IN, "validated_rows": 49_000} for key in keys}
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": 49_000 * len(keys),
                "rows_in": ROWS_IN * len(keys),
                "partitions": dg.MetadataValue.json(per_partition),
            }
        )

    return validated


def predictions_asset(
    deployment: str,
    partitions: dg.PartitionsDefinition | None,
    *,
    key: list[str] | None = None,
    record: bool = True,
) -> dg.AssetsDefinition:
    """An asset scoring ``config.rows`` rows per partition: a deployment's predictions (at
    ``key``, default ``<deployment>/predictions``) with their record, or without it."""

    @dg.asset(
        key=key or [deployment, "predictions"],
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run() if partitions else None,
    )
    def scored(context: dg.AssetExecutionContext, config: Scoring) -> dg.MaterializeResult:
        if config.fail:
            raise dg.Failure("scoring failed")
        keys = context.partition_keys if partitions else []
        rows = config.rows * max(len(keys), 1)
        written = PredictionsMetadata(
            deployment=deployment,
            rows=rows,
            model_name=f"{deployment}_model",
            model_version=1,
            output_kind="probability",
            delta_version=1,
            partitions={key: PartitionFigures(config.rows) for key in keys},
        )
        return dg.MaterializeResult(
            metadata=written.to_metadata() if record else {"dagster/row_count": rows}
        )

    return scored


credit_validated = validated_asset(CREDIT, DAILY)
credit_predictions = predictions_asset(CREDIT, DAILY)
churn_validated = validated_asset(CHURN, HOURLY)
churn_predictions = predictions_asset(CHURN, HOURLY)


@dg.op
def score_client_request() -> None:
    raise dg.Failure("tenant table missing")


@dg.job(name="client_inference_job")
def client_job() -> None:
    score_client_request()


def scoring_config(asset: dg.AssetsDefinition, **config: object) -> dict[str, object]:
    return {"ops": {asset.op.name: {"config": config}}}


def score(instance: dg.DagsterInstance, day: str, *, fail: bool = False) -> None:
    result = dg.materialize(
        [credit_predictions],
        instance=instance,
        partition_key=day,
        raise_on_error=False,
        run_config=scoring_config(credit_predictions, fail=fail),
    )
    assert result.success is not fail


def report(
    instance: dg.DagsterInstance, resource: SlaTargetsResource
) -> tuple[dict[str, bool], dict[str, object]]:
    """Materialize ``sla_report``: each check's verdict and the asset's metadata values."""
    result = dg.materialize([sla_report], instance=instance, resources={"sla_targets": resource})
    assert result.success
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    [materialization] = result.asset_materializations_for_node("sla_report")
    return checks, {key: value.value for key, value in materialization.metadata.items()}


def per_deployment(metadata: dict[str, object]) -> dict[str, dict[str, object]]:
    """The report's per-deployment table, by deployment."""
    table = metadata["deployments"]
    assert isinstance(table, dg.TableMetadataValue)
    return {str(row.data["deployment"]): dict(row.data) for row in table.records}


@pytest.fixture(scope="module")
def history() -> Iterator[dg.DagsterInstance]:
    """Three successful scoring runs of 100k rows and one unrelated run (not counted)."""
    with dg.instance_for_test() as instance:
        for day in ("2026-11-02", "2026-11-03", "2026-11-04"):
            score(instance, day)
        dg.materialize([credit_validated], instance=instance, partition_key="2026-11-05")
        yield instance


def shipped(**changes: float) -> SlaTargetsResource:
    base = from_settings.sla_targets(load_settings())
    return SlaTargetsResource(**{**base.model_dump(), **changes})


def test_the_asset_reports_a_healthy_history(history: dg.DagsterInstance) -> None:
    checks, metadata = report(history, shipped())
    assert checks == dict.fromkeys(SLA_CHECKS, True)
    assert metadata["runs"] == 3
    assert metadata["records"] == 3 * ROWS
    assert metadata["failed_records"] == 0
    assert metadata["all_targets_met"] is True
    assert "| throughput |" in str(metadata["report"])
    assert "| credit_risk | 3 | 3 | 0 | 300,000 |" in str(metadata["report"])
    assert float(metadata["throughput_records_per_hour"]) > 1_000_000  # type: ignore[arg-type]
    credit = per_deployment(metadata)[CREDIT]
    assert (credit["runs"], credit["records"], credit["all_targets_met"]) == (3, 3 * ROWS, True)


@pytest.mark.parametrize(
    ("changes", "broken"),
    [
        ({"job_completion_within_seconds": 0.001}, "job_completion_within_target"),
        ({"data_throughput_per_hour": 1e13}, "throughput_meets_target"),
    ],
)
def test_a_target_out_of_reach_fails_its_check_only(
    history: dg.DagsterInstance, changes: dict[str, float], broken: str
) -> None:
    checks, _ = report(history, shipped(**changes))
    assert checks == {name: name != broken for name in SLA_CHECKS}


def test_failed_runs_count_their_partitions_rows_as_failed() -> None:
    with dg.instance_for_test() as instance:
        for day in ("2026-11-02", "2026-11-03", "2026-11-04"):
            score(instance, day)
        dg.materialize([credit_validated], instance=instance, partition_key="2026-11-05")
        score(instance, "2026-11-05", fail=True)  # 50,000 rows of its partition failed
        assert not client_job.execute_in_process(instance=instance, raise_on_error=False).success

        # 3 of 5 runs succeeded: a 50% completion target keeps that check green.
        checks, metadata = report(instance, shipped(job_completion_quantile=0.5))

    assert checks == {name: name != "error_rate_below_target" for name in SLA_CHECKS}
    assert (metadata["runs"], metadata["failed"]) == (5, 2)
    assert metadata["failed_records"] == ROWS_IN + 1  # the partition's rows + one failed unit
    assert metadata["records"] == 3 * ROWS + ROWS_IN + 1
    deployments = per_deployment(metadata)
    assert set(deployments) == {CREDIT, "tenants"}
    assert (deployments[CREDIT]["runs"], deployments[CREDIT]["failed_records"]) == (4, ROWS_IN)
    assert (deployments["tenants"]["runs"], deployments["tenants"]["failed_records"]) == (1, 1)


def test_every_deployments_runs_are_counted() -> None:
    """Two deployments, daily and hourly, their runs recognized by the record their
    predictions carry or by their jobs, whatever the asset keys: per deployment and in total."""
    fraud_scores = predictions_asset("fraud", None, key=["scores_v2"])  # no "predictions" key
    unrecorded = predictions_asset("other", None, record=False)  # a key, but no record
    churn_rescore = dg.define_asset_job(
        "churn__rescore_job", selection=[churn_predictions], partitions_def=HOURLY
    )
    churn_score = dg.define_asset_job(
        "churn__score_partition_job", selection=[churn_predictions], partitions_def=HOURLY
    )
    defs = dg.Definitions(
        assets=[churn_validated, churn_predictions], jobs=[churn_rescore, churn_score]
    )
    hours = ["2026-11-02-00:00", "2026-11-02-02:00"], ["2026-11-02-03:00", "2026-11-02-04:00"]
    with dg.instance_for_test() as instance:
        for day in ("2026-11-02", "2026-11-03"):
            score(instance, day)  # credit_risk: 2 runs of 100k rows
        # churn: one run over three hours (1,000 rows each), its record counted per hour
        rescored = defs.resolve_job_def("churn__rescore_job").execute_in_process(
            instance=instance,
            tags=range_tags(*hours[0]),
            run_config=scoring_config(churn_predictions, rows=1_000),
        )
        assert rescored.success
        assert len(rescored.asset_materializations_for_node(churn_predictions.op.name)) == 3
        # churn: a run over two validated hours fails: their rows count as failed
        for hour in hours[1]:
            dg.materialize([churn_validated], instance=instance, partition_key=hour)
        failed = defs.resolve_job_def("churn__score_partition_job").execute_in_process(
            instance=instance,
            tags=range_tags(*hours[1]),
            run_config=scoring_config(churn_predictions, fail=True),
            raise_on_error=False,
        )
        assert not failed.success
        for asset in (fraud_scores, unrecorded):
            assert dg.materialize([asset], instance=instance).success

        checks, metadata = report(instance, shipped(job_completion_quantile=0.5))

    deployments = per_deployment(metadata)
    assert set(deployments) == {CREDIT, CHURN, "fraud"}
    figures = {
        name: (row["runs"], row["succeeded"], row["records"], row["failed_records"])
        for name, row in deployments.items()
    }
    assert figures == {
        CREDIT: (2, 2, 2 * ROWS, 0),
        CHURN: (2, 1, 3_000 + 2 * ROWS_IN, 2 * ROWS_IN),
        "fraud": (1, 1, ROWS, 0),
    }
    assert (metadata["runs"], metadata["failed"]) == (5, 1)
    assert metadata["records"] == 3 * ROWS + 3_000 + 2 * ROWS_IN
    assert metadata["failed_records"] == 2 * ROWS_IN
    assert checks["error_rate_below_target"] is False
    assert deployments[CHURN]["all_targets_met"] is False
    assert deployments[CREDIT]["all_targets_met"] is True


def range_tags(first: str, last: str) -> dict[str, str]:
    return {
        "dagster/asset_partition_range_start": first,
        "dagster/asset_partition_range_end": last,
    }


def test_the_report_refreshes_hourly() -> None:
    assert sla_report_schedule.cron_schedule == "0 * * * *"
    defs = dg.Definitions(
        assets=[sla_report],
        schedules=[sla_report_schedule],
        resources={"sla_targets": shipped()},
    )
    dg.Definitions.validate_loadable(defs)
    assert defs.resolve_schedule_def("sla_report_schedule").job.name == "sla_report_job"
