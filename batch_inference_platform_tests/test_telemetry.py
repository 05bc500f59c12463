"""Run metrics and traces through OpenTelemetry: a real scoring run's rows, duration and
throughput reach the local JSON-lines exporter, and - with an Application Insights connection
string - the real Azure Monitor exporter posts them to the ingestion endpoint (a local sink)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import dagster as dg
import pytest

from batch_inference_platform.defs.monitoring.run_metrics import (
    TelemetryResource,
    run_metrics_on_success,
)
from batch_inference_platform.lib.telemetry import CONNECTION_STRING_ENV, RunFigures, configure

from .conftest import DAY_A, PlatformFactory, materializations
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


def test_a_scoring_run_is_measured_and_traced(
    make_platform: PlatformFactory, tmp_path: Path
) -> None:
    platform = make_platform("telemetry")
    assert platform.generate(DAY_A).success and platform.train().success
    result = platform.score(DAY_A)
    assert result.success
    rows = materializations(result)["predictions"]["dagster/row_count"]
    telemetry = TelemetryResource(collection_interval_seconds=60, local_dir=str(tmp_path))
    context = dg.build_run_status_sensor_context(
        sensor_name="run_metrics_on_success",
        dagster_instance=platform.instance,
        dagster_run=result.dagster_run,
        dagster_event=result.get_run_success_event(),
        resources={"telemetry": telemetry},
    )
    run_metrics_on_success(context)
    sums = _sums(tmp_path / "metrics.jsonl")
    assert sums["bip.records.scored"] == rows
    assert sums["bip.runs"] == 1
    spans = [json.loads(line) for line in (tmp_path / "spans.jsonl").read_text().splitlines()]
    (span,) = [s for s in spans if s["attributes"].get("run_id") == result.run_id]
    assert span["name"] == "run score_partition_job"
    assert span["attributes"]["rows"] == rows and span["attributes"]["status"] == "success"


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
                rows=3000,
                errors=0,
                attributes={},
            )
        )
        telemetry.shutdown()
    posted = b"".join(r.body for r in sink.requests if "/track" in r.path)
    assert sink.requests and all(r.path.endswith("/v2.1/track") for r in sink.requests)
    assert b"bip.records.scored" in posted and b"run score_partition_job" in posted
    assert not (tmp_path / "metrics.jsonl").exists()
