"""Engine ``databricks`` against an HTTP fake of the Azure Databricks REST API that the real
databricks-sdk and the real ``PipesDatabricksClient`` talk to, and that runs the submitted job
locally (the platform's wheel, the Spark job on a Sail "cluster").

The first cluster asked for exceeds the workspace's quota, so does the second; the third,
smaller one starts and the run scores exactly what the in-process engine scores. A second run
is sized from the first one's throughput.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest
from dagster_pipes import (
    DAGSTER_PIPES_CONTEXT_ENV_VAR,
    DAGSTER_PIPES_MESSAGES_ENV_VAR,
    decode_env_var,
)

from .conftest import (
    DAY_A,
    DAY_B,
    ENV,
    Platform,
    PlatformFactory,
    check_evaluations,
    materializations,
    read_day,
    scores_by_key,
)
from .databricks_fake import FakeDatabricks
from .servers import sail_server
from .sinks import http_sink

QUOTA = 8
"""Workers the fake workspace's quota allows; application.yml asks for up to 20."""


@dataclass
class Databricks:
    fake: FakeDatabricks
    platform: Platform
    local_scores: dict[dt.date, pa.Table]
    first: dg.ExecuteInProcessResult
    alerts: list[dict]
    """What the alert webhook received during the first run."""


@pytest.fixture(scope="module")
def databricks(
    make_platform: PlatformFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Databricks]:
    local = make_platform("databricks_engine")
    for day in (DAY_A, DAY_B):
        assert local.generate(day).success
    assert local.train().success
    assert local.score_range(DAY_A, DAY_B).success
    scores = {day: read_day(local.predictions, day) for day in (DAY_A, DAY_B)}
    root = f"dbfs:/bip-test-{uuid.uuid4().hex[:8]}"
    with (
        sail_server(tmp_path_factory.mktemp("sail")) as spark,
        FakeDatabricks(spark_remote=spark, max_workers_quota=QUOTA) as fake,
        pytest.MonkeyPatch.context() as env,
        http_sink() as alerts,
    ):
        env.setenv("DATABRICKS_TOKEN", fake.token)
        env.setenv("ALERT_WEBHOOK_URL", alerts.url + "/alerts")
        platform = make_platform(
            "unused",
            share=local,
            ENGINE="databricks",
            DATABRICKS__HOST=fake.url,
            DATABRICKS__ARTIFACTS_DIR=f"{root}/artifacts",
            DATABRICKS__LOG_DIR=f"{root}/logs",
            DATABRICKS__POLL_SECONDS="0.5",
            DATABRICKS__CLUSTER_MODEL_CACHE_DIR=str(local.settings.model_cache_dir),
        )
        first = platform.score_range(DAY_A, DAY_B)
        yield Databricks(
            fake, platform, scores, first, [json.loads(r.body) for r in alerts.requests]
        )


def _run_logs(databricks: Databricks) -> str:
    """Every log line of the first run, as the Dagster UI shows them."""
    entries = databricks.platform.instance.all_logs(databricks.first.run_id)
    return "\n".join(entry.user_message for entry in entries)


def test_scores_on_databricks_equal_the_in_process_engine(databricks: Databricks) -> None:
    assert databricks.first.success
    for day, before in databricks.local_scores.items():
        after = read_day(databricks.platform.predictions, day)
        local, remote = scores_by_key(before), scores_by_key(after)
        assert local.keys() == remote.keys() and local
        assert max(abs(local[k] - remote[k]) for k in local) <= 1e-12
        assert set(after.column("run_id").to_pylist()) == {databricks.first.run_id}
    assert all(check.passed for check in check_evaluations(databricks.first).values())


def test_quota_errors_retry_on_halved_clusters(databricks: Databricks) -> None:
    runs = sorted(databricks.fake.runs.values(), key=lambda run: run.run_id)
    assert [run.requested_workers for run in runs[:3]] == [20, 10, 5]
    assert [run.result_state for run in runs[:3]] == ["FAILED", "FAILED", "SUCCESS"]
    assert "QuotaExceeded" in (runs[0].state_message or "")
    meta = materializations(databricks.first)["predictions"]
    assert meta["workers"] == 5
    assert meta["recommended_workers"] == 20
    assert [a.split(":")[0] for a in meta["cluster_attempts"]] == ["20 workers", "10 workers"]
    logs = _run_logs(databricks)
    assert "ALERT: a job cluster of 20 workers could not start" in logs
    assert [a["title"] for a in databricks.alerts] == ["Databricks cluster could not start"] * 2
    assert "QuotaExceeded" in databricks.alerts[0]["error"]
    assert databricks.alerts[0]["link"].endswith(f"/runs/{databricks.first.run_id}")


def test_the_cluster_installs_the_platform_wheel(databricks: Databricks) -> None:
    (task,) = databricks.fake.runs[max(databricks.fake.runs)].tasks
    (library,) = task["libraries"]
    assert library["whl"].endswith(".whl") and "batch_inference_platform-" in library["whl"]
    assert task["python_wheel_task"] == {
        "package_name": "batch_inference_platform",
        "entry_point": "score-partitions",
        "parameters": ["--pipes", "dbfs"],
    }
    assert task["new_cluster"]["node_type_id"] == "Standard_D4s_v3"
    # The driver ran in the run's own environment: the wheel's packages installed there as
    # files (not the source tree), its dependencies linked in beside them.
    run = next(r for r in databricks.fake.runs.values() if r.result_state == "SUCCESS")
    (site,) = (run.stdout_path.parent / "python" / "lib").glob("python3.*/site-packages")
    for package in ("batch_inference_platform", "spark_jobs"):
        assert (site / package).is_dir() and not (site / package).is_symlink()
    assert (site / "pyspark").is_symlink() and (site / "lleaves").is_symlink()


def test_cluster_and_run_reach_the_dagster_run(databricks: Databricks) -> None:
    meta = materializations(databricks.first)["predictions"]
    run = databricks.fake.runs[int(meta["databricks_run_id"])]
    assert meta["cluster_id"] == run.cluster_id
    assert meta["engine"] == "databricks"
    logs = _run_logs(databricks)
    assert "observed state transition to RunLifeCycleState.RUNNING" in logs
    assert "2026-11-02: " in logs and "rows scored" in logs  # the driver's log lines


def test_pipes_temp_files_are_removed(databricks: Databricks) -> None:
    """Each run's Pipes context and message folders (named in the cluster's environment) were
    on DBFS while it ran and are gone now - the failed cluster attempts' included."""
    folders = []
    for run in databricks.fake.runs.values():
        env = run.tasks[0]["new_cluster"]["spark_env_vars"]
        context = decode_env_var(env[DAGSTER_PIPES_CONTEXT_ENV_VAR])["path"]  # a file
        messages = decode_env_var(env[DAGSTER_PIPES_MESSAGES_ENV_VAR])["path"]  # a folder
        folders += [Path(f"/dbfs{context}").parent, Path(f"/dbfs{messages}")]
    assert len(folders) >= 6  # three attempts of the first run, context and messages each
    assert [f for f in folders if f.exists()] == []


def test_the_next_run_is_sized_from_history(databricks: Databricks) -> None:
    second = databricks.platform.score_range(DAY_A, DAY_B)
    assert second.success
    meta = materializations(second)["predictions"]
    assert meta["recommended_workers"] == 2  # tiny data: the minimum meets the target
    assert meta["workers"] == 2
    assert str(meta["sizing_basis"]).startswith("median of 1 earlier runs")


def test_a_cancelled_dagster_run_cancels_the_databricks_run(
    databricks: Databricks, tmp_path: Path
) -> None:
    """SIGINT to the process running the job (what terminating a Dagster run sends): the
    Pipes client cancels the Databricks run, whose cluster never finishes starting."""
    app = databricks.platform.settings.application
    with FakeDatabricks(
        dbfs_root=Path("/dbfs"), max_workers_quota=QUOTA, cluster_start_seconds=120
    ) as slow:
        env = {
            **os.environ,
            "DATABRICKS_TOKEN": slow.token,
            ENV + "ENGINE": "databricks",
            ENV + "DATA_DIR": str(app.data_dir),
            ENV + "DEPLOYMENTS_DIR": app.deployments_dir,
            ENV + "LAKE__ROOT": app.lake.root,
            ENV + "MLFLOW__TRACKING_URI": app.mlflow.tracking_uri,
            ENV + "MLFLOW__REGISTRY_URI": "",
            ENV + "MLFLOW__ARTIFACT_ROOT": app.mlflow.artifact_root,
            ENV + "DATABRICKS__HOST": slow.url,
            ENV + "DATABRICKS__ARTIFACTS_DIR": app.databricks.artifacts_dir,
            ENV + "DATABRICKS__POLL_SECONDS": "0.5",
        }
        log = (tmp_path / "run.log").open("wb")
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "batch_inference_platform_tests.run_scoring",
                databricks.platform.scope.job_name("score_partition_job"),
                "2026-11-02",
                "2026-11-03",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 120
        while not slow.runs:
            assert process.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the Databricks run was never submitted"
            time.sleep(0.2)
        (run_id,) = slow.runs
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) != 0
        run = slow.wait_for_run(run_id, timeout=30)
    assert slow.cancelled == [run_id]
    assert (run.life_cycle_state, run.result_state) == ("TERMINATED", "CANCELED")
    output = (tmp_path / "run.log").read_text()
    assert "execution interrupted, canceling Databricks job" in output
    assert f"Databricks run {run_id} was cancelled" in output
