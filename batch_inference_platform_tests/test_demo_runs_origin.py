"""``make demo``'s runs belong to the workspace's code location: the UI lists them on the job's
Runs tab (it filters on the job name and the repository label the location's origin gives a
run) and re-executes them as runs of the job it serves (same job snapshot)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.definitions.selector import JobSubsetSelector
from dagster._core.storage.tags import REPOSITORY_LABEL_TAG
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import WorkspaceFileTarget

from .conftest import write_deployment

REPO = Path(__file__).resolve().parents[1]
LOCATION = "batch_inference_platform"
"""The location name in ``workspace.yaml``."""
REPOSITORY = "__repository__"
DAY = "2026-11-10"
JOBS = ("credit_risk__generate_features_job", "credit_risk__train_demo_model_job")
SCORE_JOB = "credit_risk__score_partition_job"


def _environment(tmp_path: Path) -> dict[str, str]:
    """The demo's settings in ``tmp_path``, with one deployment (credit_risk)."""
    deployments = tmp_path / "deployments"
    source = tmp_path / "data" / "sources" / "credit_risk"
    write_deployment(deployments, "credit_risk", {"source": {"table": str(source)}})
    return {
        "BIP__BATCH_INFERENCE__DATA_DIR": str(tmp_path / "data"),
        "BIP__BATCH_INFERENCE__LAKE__ROOT": str(tmp_path / "data" / "lake"),
        "BIP__BATCH_INFERENCE__MLFLOW__TRACKING_URI": f"sqlite:///{tmp_path}/data/mlflow.db",
        "BIP__BATCH_INFERENCE__MLFLOW__ARTIFACT_ROOT": str(tmp_path / "data" / "artifacts"),
        "BIP__BATCH_INFERENCE__DEPLOYMENTS_DIR": str(deployments),
        "DAGSTER_HOME": str(tmp_path / "data" / "dagster_home"),
    }


def test_demo_runs_carry_the_code_locations_origin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _environment(tmp_path)
    args = ["--days", "1", "--rows", "2000", "--boost-rounds", "10", "--end-date", DAY]
    done = subprocess.run(
        [sys.executable, "-m", "batch_inference_platform.cli", "demo", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "credit_risk" in done.stdout and "rows scored" in done.stdout  # the summary

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        runs = instance.get_runs()
        assert sorted(r.job_name for r in runs) == sorted([*JOBS, SCORE_JOB])
        for run in runs:
            assert run.status == dg.DagsterRunStatus.SUCCESS
            origin = run.remote_job_origin
            assert origin is not None, f"{run.job_name}: no code location origin"
            assert origin.location_name == LOCATION
            assert origin.repository_origin.repository_name == REPOSITORY
            assert origin.job_name == run.job_name
        # What the job's Runs tab asks for.
        label = f"{REPOSITORY}@{LOCATION}"
        listed = instance.get_runs(
            dg.RunsFilter(job_name=SCORE_JOB, tags={REPOSITORY_LABEL_TAG: label})
        )
        assert len(listed) == 1 and listed[0].tags["dagster/partition"] == DAY

        # The location as `make dev` serves it (workspace.yaml, its own code server): the
        # demo's runs have the snapshot of the job it serves, so re-execution sees no change.
        target = WorkspaceFileTarget(paths=[str(REPO / "workspace.yaml")])
        with WorkspaceProcessContext(instance, target) as context:
            location = context.create_request_context().get_code_location(LOCATION)
            for run in runs:
                served = location.get_job(
                    JobSubsetSelector(
                        location_name=LOCATION,
                        repository_name=REPOSITORY,
                        job_name=run.job_name,
                        op_selection=None,
                    )
                )
                assert run.job_snapshot_id == served.identifying_job_snapshot_id, run.job_name
