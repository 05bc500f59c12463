"""The main command, as a person runs it: ``batch-inference demo`` on embedded defaults - every
deployment with a demo generator (credit_risk and churn) generated, trained and scored."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest
import yaml
from dagster._core.instance.ref import InstanceRef

from batch_inference_platform.cli import prepare_dagster_home
from batch_inference_platform.config import load_settings
from batch_inference_platform.lib.deployments.folder import read_deployments
from batch_inference_platform.lib.lake.layout import LakeLayout
from batch_inference_platform.lib.lake.tables import snapshot, table_schema

from .conftest import write_deployment

DEMOS = ("churn", "credit_risk")
"""The package's deployments with a demo generator."""
DAYS = ["2026-11-09", "2026-11-10"]


def _deployments(tmp_path: Path) -> Path:
    """The package's deployments, each source table in the test's data folder (their relative
    table paths name the repository's data folder)."""
    folder = tmp_path / "deployments"
    if not folder.exists():
        for name in read_deployments(Path(__file__).resolve().parents[1], lake_root="data/lake"):
            source = tmp_path / "data" / "sources" / name
            write_deployment(folder, name, {"source": {"table": str(source)}})
    return folder


def _demo(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "BIP__BATCH_INFERENCE__DATA_DIR": str(tmp_path / "data"),
        "BIP__BATCH_INFERENCE__LAKE__ROOT": str(tmp_path / "data" / "lake"),
        "BIP__BATCH_INFERENCE__MLFLOW__TRACKING_URI": f"sqlite:///{tmp_path}/data/mlflow.db",
        "BIP__BATCH_INFERENCE__MLFLOW__ARTIFACT_ROOT": str(tmp_path / "data" / "artifacts"),
        "BIP__BATCH_INFERENCE__DEPLOYMENTS_DIR": str(_deployments(tmp_path)),
    }
    env.pop("DAGSTER_HOME", None)
    return subprocess.run(
        [sys.executable, "-m", "batch_inference_platform.cli", "demo", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_demo_scores_every_day_and_leaves_runs_for_the_ui(tmp_path: Path) -> None:
    done = _demo(
        tmp_path,
        "--days",
        "2",
        "--rows",
        "3000",
        "--boost-rounds",
        "10",
        "--end-date",
        "2026-11-10",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = _summary_rows(done.stdout)
    assert sorted((r[0], r[1]) for r in rows) == [(name, day) for name in DEMOS for day in DAYS]
    for row in rows:
        rows_in, quarantined, scored = (int(v.replace(",", "")) for v in row[2:5])
        assert rows_in == 3000 and scored == rows_in - quarantined > 0
        assert row[6] == "1" and row[-1] == "ok"

    # Each deployment's predictions: its own table, key and partition column.
    settings = load_settings(environ={"BIP__BATCH_INFERENCE__DATA_DIR": str(tmp_path / "data")})
    layout = LakeLayout(str(tmp_path / "data" / "lake"))
    deployments = read_deployments(
        settings.project_root, _deployments(tmp_path), lake_root=settings.application.lake.root
    )
    expected = {
        "credit_risk": ("customer_id", "event_date"),
        "churn": ("account_id", "snapshot_date"),
    }
    for name, (key, partition) in expected.items():
        deployment = deployments[name]
        predictions = layout.deployment(deployment).predictions
        assert predictions.uri == str(tmp_path / "data" / "lake" / "predictions" / name)
        assert predictions.uri in done.stdout
        assert table_schema(predictions).names[:2] == [key, partition]
        assert snapshot(predictions, deployment.partitioning).partitions() == DAYS
    churn = table_schema(layout.deployment(deployments["churn"]).predictions)
    assert churn.field("account_id").type == pa.string() and "label" in churn.names

    home = tmp_path / "data" / "dagster_home"
    with dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        runs = instance.get_runs()
        jobs = sorted(r.job_name for r in runs)
        for name in DEMOS:
            assert jobs.count(f"{name}__score_partition_job") == 2
            assert jobs.count(f"{name}__train_demo_model_job") == 1
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)

    # Rerunning is idempotent: the same partitions are replaced and the model is reused.
    again = _demo(
        tmp_path,
        "--days",
        "2",
        "--rows",
        "3000",
        "--boost-rounds",
        "10",
        "--end-date",
        "2026-11-10",
    )
    assert again.returncode == 0, again.stderr[-3000:]
    rerun = _summary_rows(again.stdout)
    assert len(rerun) == 4 and all(row[6] == "1" and row[-1] == "ok" for row in rerun)


def _summary_rows(stdout: str) -> list[list[str]]:
    """The summary table's rows: deployment, partition, rows in, quarantined, scored, rows/s,
    model version, checks ok/failed, status."""
    rows = [line.split() for line in stdout.splitlines()]
    return [row for row in rows if len(row) == 9 and row[0] in DEMOS and row[1] in DAYS]


def test_demo_rejects_a_day_outside_the_partitions(tmp_path: Path) -> None:
    done = _demo(tmp_path, "--end-date", "2020-01-01")
    assert done.returncode == 2
    assert "2020-01-01 is not a partition" in done.stderr


def test_demo_reports_bad_configuration_without_a_trace(tmp_path: Path) -> None:
    env_key = "BIP__BATCH_INFERENCE__SPARK__CLUSTER__MIN_WORKERS"
    os.environ[env_key] = "50"
    try:
        done = _demo(tmp_path)
    finally:
        del os.environ[env_key]
    assert done.returncode == 2
    assert "configuration error" in done.stderr
    assert "min-workers" in done.stderr and "Traceback" not in done.stderr


def test_a_broken_tenants_file_is_a_configuration_error_not_a_traceback(tmp_path: Path) -> None:
    broken = tmp_path / "tenants.yml"
    broken.write_text("tenants:\n  - id: x\n")
    done = subprocess.run(
        [sys.executable, "-m", "batch_inference_platform.cli", "dagster-yaml"],
        env={**os.environ, "BIP__BATCH_INFERENCE__API__TENANTS_FILE": str(broken)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("configuration error: ")
    assert "tenants[0]: id" in done.stderr and "Traceback" not in done.stderr


def test_the_local_instance_has_run_monitoring(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """make demo / make dev use an instance that marks a killed run failed; an instance file
    written by the earlier CLI is brought up to date, one a person wrote is left alone."""
    settings = load_settings(environ={"BIP__BATCH_INFERENCE__DATA_DIR": str(tmp_path / "data")})
    home = settings.dagster_home
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")  # the earlier default
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # restored after the test
    prepare_dagster_home(settings)
    written = yaml.safe_load((home / "dagster.yaml").read_text())
    assert written["run_monitoring"]["enabled"] is True
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: true\n")  # a person's own
    prepare_dagster_home(settings)
    assert (home / "dagster.yaml").read_text() == "telemetry:\n  enabled: true\n"
