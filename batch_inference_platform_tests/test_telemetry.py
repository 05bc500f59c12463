"""Run metrics and traces through OpenTelemetry: a real scoring run's rows, duration and
throughput reach the local JSON-lines exporter with its deployment, the runs of two
deployments are told apart, and - with an Application Insights connection string - the real
Azure Monitor exporter posts them to the ingestion endpoint (a local sink)."""

import datetime as dt
import json
from pathlib import Path

import dagster as dg
import pytest

from batch_inference_platform.defs.metadata import PartitionFigures, PredictionsMetadata
from batch_inference_platform.defs.monitoring.run_metrics import run_metrics_on_success
from batch_inference_platform.defs.resources import TelemetryResource
from batch_inference_platform.lib.telemetry import CONNECTION_STRING_ENV, RunFigures, configure

from .conftest import CREDIT, DAY_A, PlatformFactory, materializations
from .sinks import http_sink


def _sums(metrics_file: Path) -> dict[str, float]:
    """The last exported value of each sum metric (cumulative) in the JSON-lines file."""
    sums: dict[str, float] = {}
    for line in metrics_file.read_text().splitlines():
        for resource in json.loads(line)["resource_metrics"]:
            for scope in resource["scope_metrics"]:
                for metric in scope["metrics"]:
                    points = metric["data"].get("data_points", [])
                    if "sum" in metric["data"] or metric["data"].get("is_monotonic"):
                        sums[metric["name"]] = sum(p.get("value", 0) for p in points)
    return sums


def _points(metrics_file: Path, name: str) -> list[tuple[dict[str, object], float]]:
    """The data points of metric ``name`` in the last export: (attributes, value or sum)."""
    last = json.loads(metrics_file.read_text().splitlines()[-1])
    return [
        (point["attributes"], point.get("value", point.get("sum", 0)))
        for resource in last["resource_metrics"]
        for scope in resource["scope_metrics"]
        for metric in scope["metrics"]
        if metric["name"] == name
        for point in metric["data"]["data_points"]
    ]


def _spans(directory: Path) -> list[dict]:
    return [json.loads(line) for line in (directory / "spans.jsonl").read_text().splitlines()]


def _measure(
    instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult, telemetry: TelemetryResource
) -> None:
    """Evaluate the real ``run_metrics_on_success`` sensor on ``result``'s run."""
    context = dg.build_run_status_sensor_context(
        sensor_name="run_metrics_on_success",
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        dagster_event=result.get_run_success_event(),
        resources={"telemetry": telemetry},
    )
    run_metrics_on_success(context)


def test_a_scoring_run_is_measured_and_traced(
    make_platform: PlatformFactory, tmp_path: Path
) -> None:
    platform = make_platform("telemetry")
    assert platform.generate(DAY_A).success and platform.train().success
    result = platform.score(DAY_A)
    assert result.success
    rows = materializations(result)["predictions"]["dagster/row_count"]
    telemetry = TelemetryResource(collection_interval_seconds=60, local_dir=str(tmp_path))
    _measure(platform.instance, result, telemetry)
    sums = _sums(tmp_path / "metrics.jsonl")
    assert sums["bip.records.scored"] == rows
    assert sums["bip.runs"] == 1
    [(attributes, _)] = _points(tmp_path / "metrics.jsonl", "bip.records.scored")
    assert attributes["deployment"] == CREDIT
    (span,) = [s for s in _spans(tmp_path) if s["attributes"].get("run_id") == result.run_id]
    assert span["name"] == f"run {CREDIT}__score_partition_job"
    assert span["attributes"]["rows"] == rows and span["attributes"]["status"] == "success"
    assert span["attributes"]["deployment"] == CREDIT


DAILY = dg.DailyPartitionsDefinition(start_date="2026-11-01")


def _predictions(deployment: str, key: list[str], rows: int) -> dg.AssetsDefinition:
    """An asset at ``key`` scoring ``rows`` rows of ``deployment`` a day, with its record."""

    @dg.asset(key=key, partitions_def=DAILY)
    def scored(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        record = PredictionsMetadata(
            deployment=deployment,
            rows=rows,
            model_name=f"{deployment}_model",
            model_version=3,
            output_kind="probability",
            delta_version=1,
            partitions={context.partition_key: PartitionFigures(rows)},
        )
        return dg.MaterializeResult(metadata=record.to_metadata())

    return scored


def test_the_runs_of_two_deployments_are_told_apart(tmp_path: Path) -> None:
    """Rows and throughput per deployment, whatever the keys (``scores`` has no
    "predictions" in it), and one run scoring both deployments split between them."""
    credit = _predictions(CREDIT, [CREDIT, "predictions"], 300)
    churn = _predictions("churn", ["churn", "scores"], 2_000)
    telemetry = TelemetryResource(collection_interval_seconds=60, local_dir=str(tmp_path))
    with dg.instance_for_test() as instance:
        runs = [
            dg.materialize([credit], instance=instance, partition_key="2026-11-02"),
            dg.materialize([churn], instance=instance, partition_key="2026-11-02"),
            dg.materialize([credit, churn], instance=instance, partition_key="2026-11-03"),
        ]
        for result in runs:
            assert result.success
            _measure(instance, result, telemetry)

    metrics = tmp_path / "metrics.jsonl"
    rows: dict[object, float] = {}
    for attributes, value in _points(metrics, "bip.records.scored"):
        rows[attributes["deployment"]] = rows.get(attributes["deployment"], 0) + value
    assert rows == {CREDIT: 2 * 300, "churn": 2 * 2_000}
    throughput = {a["deployment"] for a, _ in _points(metrics, "bip.run.throughput")}
    assert throughput == {CREDIT, "churn"}
    runs_by_deployment = {
        str(a.get("deployment")): value for a, value in _points(metrics, "bip.runs")
    }
    assert runs_by_deployment == {CREDIT: 1, "churn": 1, "None": 1}  # the third: both
    spans = {s["attributes"]["run_id"]: s["attributes"] for s in _spans(tmp_path)}
    both = spans[runs[2].run_id]
    assert both["rows"] == 2_300 and both["deployments"] == ["churn", CREDIT]
    assert (both[f"rows.{CREDIT}"], both["rows.churn"]) == (300, 2_000)
    assert spans[runs[1].run_id]["deployment"] == "churn"


def test_with_a_connection_string_runs_go_to_azure_monitor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with http_sink() as sink:
        monkeypatch.setenv(
            CONNECTION_STRING_ENV,
            "InstrumentationKey=00000000-0000-0000-0000-000000000001;"
            f"IngestionEndpoint={sink.url}/",
        )
        telemetry = configure(interval=dt.timedelta(seconds=60), local_dir=tmp_path)
        assert telemetry.destination == "azure-monitor"
        end = dt.datetime.now(dt.UTC)
        telemetry.record_run(
            RunFigures(
                job="score_partition_job",
                run_id="run-1",
                status="success",
                start=end - dt.timedelta(seconds=30),
                end=end,
                errors=0,
                attributes={},
                rows_by_deployment={CREDIT: 3000},
                deployment=CREDIT,
            )
        )
        telemetry.shutdown()
    posted = b"".join(r.body for r in sink.requests if "/track" in r.path)
    assert sink.requests and all(r.path.endswith("/v2.1/track") for r in sink.requests)
    assert b"bip.records.scored" in posted and b"run score_partition_job" in posted
    assert not (tmp_path / "metrics.jsonl").exists()
