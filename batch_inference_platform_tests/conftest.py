"""Shared fixtures: a small, isolated copy of the platform (lake + MLflow registry + Dagster
instance) under a pytest tmp dir, and helpers to run its jobs and read its tables.

Tables are read through ``lib.lake.tables`` (``read_partition``) or by streaming
``to_pyarrow_dataset().to_batches()`` only: ``DeltaTable.to_pyarrow_table()``/``to_pandas()``
(and ``dataset.to_table()``) can make the interpreter abort at exit (delta-io/delta-rs#2184).
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import psutil
import pyarrow as pa
import pytest
import yaml
from dagster._core.definitions.asset_checks.asset_check_evaluation import AssetCheckEvaluation

from batch_inference_platform.config import Settings, load_settings
from batch_inference_platform.definitions import build_definitions
from batch_inference_platform.defs.scope import DeploymentScope
from batch_inference_platform.lib.deployments.folder import DEFAULT_FOLDER, read_deployments
from batch_inference_platform.lib.deployments.partitioning import Partitioning
from batch_inference_platform.lib.deployments.spec import Deployment
from batch_inference_platform.lib.lake.layout import DeploymentTables, LakeLayout
from batch_inference_platform.lib.lake.tables import DeltaLocation, read_partition, table_schema
from batch_inference_platform.lib.registry.client import ModelRegistry

from .servers import SESSION_MARKER, describe, kill_all, leftover_processes

# --------------------------------------------------------------------------- process-leak guard

_LEAKS = pytest.StashKey[str]()


def pytest_sessionstart(session: pytest.Session) -> None:
    """Mark this session's environment: every process the tests start inherits the marker."""
    os.environ[SESSION_MARKER] = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A process the suite started that outlives it fails the session (and is killed)."""
    marker = os.environ.get(SESSION_MARKER)
    if not marker:
        return
    leftovers = leftover_processes(marker)
    if leftovers:  # give processes on their way out a moment
        _, leftovers = psutil.wait_procs(leftovers, timeout=10)
    if not leftovers:
        return
    session.config.stash[_LEAKS] = describe(leftovers)
    kill_all(leftovers)
    if session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    leaks = config.stash.get(_LEAKS, "")
    if leaks:
        terminalreporter.write_sep("=", "PROCESS LEAK", red=True, bold=True)
        terminalreporter.write_line(
            "These processes started by the test suite were still running after it ended "
            f"(killed now; the session fails):\n{leaks}",
            red=True,
        )


ROWS_PER_DAY = 3000
NUM_BOOST_ROUND = 20
DAY_A = dt.date(2026, 11, 2)
DAY_B = dt.date(2026, 11, 3)
ENV = "BIP__BATCH_INFERENCE__"
CREDIT = "credit_risk"
"""The deployment the Platform fixture drives (its first, numeric use case)."""
DAILY = Partitioning.from_json({"kind": "daily", "column": "event_date", "start": None})
"""Credit risk's partitioning, for reading its tables by day."""


@dataclass
class Platform:
    """One isolated platform: its settings, Definitions and ephemeral Dagster instance."""

    root: Path
    settings: Settings
    defs: dg.Definitions
    instance: dg.DagsterInstance

    deployment_name: str = CREDIT

    @property
    def layout(self) -> LakeLayout:
        return LakeLayout(self.settings.application.lake.root)

    @property
    def deployment(self) -> Deployment:
        app = self.settings.application
        return read_deployments(
            self.settings.project_root, app.deployments_dir, lake_root=app.lake.root
        )[self.deployment_name]

    @property
    def scope(self) -> DeploymentScope:
        """The deployment's asset keys and job names."""
        return DeploymentScope(self.deployment)

    @property
    def tables(self) -> DeploymentTables:
        """The deployment's tables (source features, validated, quarantine, predictions...)."""
        return self.layout.deployment(self.deployment)

    @property
    def registry(self) -> ModelRegistry:
        mlflow = self.settings.application.mlflow
        return ModelRegistry(mlflow.tracking_uri, mlflow.registry_uri or None)

    @property
    def model_name(self) -> str:
        return self.deployment.model_name

    @property
    def alias(self) -> str:
        return self.deployment.alias

    @property
    def predictions(self) -> DeltaLocation:
        return self.tables.predictions

    def job(self, name: str) -> dg.JobDefinition:
        """The deployment's job ``name`` (e.g. ``score_partition_job``)."""
        return self.defs.resolve_job_def(self.scope.job_name(name))

    def op(self, asset: str) -> str:
        """The op name of the deployment's asset ``asset``, for run config."""
        return "__".join(self.scope.key(asset).path)

    def generate(
        self, day: dt.date, rows: int = ROWS_PER_DAY, seed: int = 7
    ) -> dg.ExecuteInProcessResult:
        return self.job("generate_features_job").execute_in_process(
            partition_key=day.isoformat(),
            instance=self.instance,
            run_config={
                "ops": {self.op("feature_tables"): {"config": {"rows": rows, "seed": seed}}}
            },
        )

    def train(self, **config: Any) -> dg.ExecuteInProcessResult:
        config = {"num_boost_round": NUM_BOOST_ROUND, **config}
        return self.job("train_demo_model_job").execute_in_process(
            instance=self.instance, run_config={"ops": {self.op("demo_model"): {"config": config}}}
        )

    def score(
        self, day: dt.date, asset_selection: list[dg.AssetKey] | None = None
    ) -> dg.ExecuteInProcessResult:
        return self.job("score_partition_job").execute_in_process(
            partition_key=day.isoformat(),
            instance=self.instance,
            raise_on_error=False,
            asset_selection=asset_selection,
        )

    def score_range(
        self, first: dt.date, last: dt.date, job: str = "score_partition_job"
    ) -> dg.ExecuteInProcessResult:
        """One run of ``job`` over the days ``first``..``last``, as a single-run backfill."""
        return self.job(job).execute_in_process(
            tags={
                "dagster/asset_partition_range_start": first.isoformat(),
                "dagster/asset_partition_range_end": last.isoformat(),
            },
            instance=self.instance,
            raise_on_error=False,
        )


PlatformFactory = Callable[..., Platform]


@pytest.fixture(scope="session")
def make_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlatformFactory]:
    """``make_platform(name, share=None, deployment=None, **overrides)`` -> a fresh Platform.

    Lake, MLflow store and Dagster storage live in a new tmp dir, unless ``share`` is given:
    then the new platform uses the same data dir and Dagster instance (e.g. to serve another
    model name from the same registry). The platform loads copies of the package's
    deployments (credit_risk, churn) from a folder of its own (their ``lake://`` sources land
    in its lake); ``deployment`` changes credit_risk's YAML attributes (deep-merged, e.g.
    ``{"model": {"name": "other"}}``). ``overrides`` are settings below ``batch-inference``,
    e.g. ``ENVIRONMENT="prod"`` (``DEPLOYMENTS_DIR`` names a folder of the test's own).
    """
    instances: list[dg.DagsterInstance] = []

    def make(
        name: str,
        share: Platform | None = None,
        deployment: dict[str, Any] | None = None,
        **overrides: str,
    ) -> Platform:
        root = share.root if share else tmp_path_factory.mktemp(name)
        data = root / "data"
        if "DEPLOYMENTS_DIR" not in overrides:  # lake:// sources: under the platform's lake
            folder = root / f"deployments-{uuid.uuid4().hex[:6]}"
            for each in (CREDIT, "churn"):
                write_deployment(folder, each, (deployment or {}) if each == CREDIT else {})
            overrides = {"DEPLOYMENTS_DIR": str(folder), **overrides}
        env = {
            "DATA_DIR": str(data),
            "LAKE__ROOT": str(data / "lake"),
            "MLFLOW__TRACKING_URI": f"sqlite:///{data}/mlflow.db",
            "MLFLOW__REGISTRY_URI": "",
            "MLFLOW__ARTIFACT_ROOT": str(data / "artifacts"),
            "API__INBOX_URL": f"sqlite:///{data}/inbox.db",
            "API__JOBS_URL": f"sqlite:///{data}/jobs.db",
            **overrides,
        }
        data.mkdir(parents=True, exist_ok=True)
        with pytest.MonkeyPatch.context() as patch:
            for key, value in env.items():
                patch.setenv(ENV + key, value)
            settings = load_settings()
        if share:
            instance = share.instance
        else:
            instance = dg.DagsterInstance.ephemeral(tempdir=str(root / "dagster"))
            instances.append(instance)
        return Platform(root, settings, build_definitions(settings), instance)

    yield make
    for instance in instances:
        instance.dispose()


def write_deployment(
    folder: Path, name: str, changes: dict[str, Any], *, source: str | None = None
) -> Path:
    """Write deployment ``source`` (default ``name``) of the package, its attributes deep-merged
    with ``changes``, as ``folder/<name>/defs.yaml``; returns the file."""
    document = yaml.safe_load((DEFAULT_FOLDER / (source or name) / "defs.yaml").read_text())
    document["attributes"] = _merge(document["attributes"], {"name": name, **changes})
    path = folder / name / "defs.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


# --------------------------------------------------------------------------- reading results


def materializations(result: dg.ExecuteInProcessResult) -> dict[str, dict[str, Any]]:
    """Metadata values of each asset materialized by ``result``, keyed by asset name (the
    last part of its key: a run belongs to one deployment)."""
    found = {}
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        key = materialization.asset_key.path[-1]
        found[key] = {k: v.value for k, v in materialization.metadata.items()}
    return found


def partition_materializations(
    result: dg.ExecuteInProcessResult, asset: dg.AssetKey
) -> dict[str | None, dict[str, Any]]:
    """Metadata values of each materialization of ``asset`` in the run, keyed by partition."""
    found = {}
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        if materialization.asset_key == asset:
            found[materialization.partition] = {
                k: v.value for k, v in materialization.metadata.items()
            }
    return found


def check_evaluations(result: dg.ExecuteInProcessResult) -> dict[str, AssetCheckEvaluation]:
    """Each asset check evaluated by ``result``, keyed by check name."""
    return {
        evaluation.check_name: evaluation for evaluation in result.get_asset_check_evaluations()
    }


def failure_messages(result: dg.ExecuteInProcessResult) -> str:
    """Every step-failure message (with its causes) and description of ``result``, joined."""
    texts = []
    for event in result.get_step_failure_events():
        data = event.step_failure_data
        error = data.error
        while error is not None:  # the exception and what caused it
            texts.append(error.message)
            error = error.cause
        if data.user_failure_data is not None and data.user_failure_data.description:
            texts.append(data.user_failure_data.description)
    return "\n".join(texts)


# --------------------------------------------------------------------------- reading tables


def read_day(
    location: DeltaLocation, day: dt.date | str, partitioning: Partitioning = DAILY
) -> pa.Table:
    """The rows of one partition, by day or key (an empty table when the table does not
    exist); daily by ``event_date`` unless ``partitioning`` says otherwise."""
    if not location.exists():
        return pa.table({})
    key = day.isoformat() if isinstance(day, dt.date) else day
    batches = list(read_partition(location, partitioning, key))
    return pa.Table.from_batches(batches, table_schema(location))


def read_all(location: DeltaLocation) -> pa.Table:
    """The whole current version of a (small) table, streamed batch by batch.

    Not ``dataset.to_table()``: its threaded scan, like ``to_pyarrow_table``, can leave the
    interpreter aborting at exit (delta-io/delta-rs#2184).
    """
    dataset = location.open().to_pyarrow_dataset()
    return pa.Table.from_batches(list(dataset.to_batches()), dataset.schema)


def commit_info(location: DeltaLocation, version: int | str) -> dict[str, Any]:
    """The Delta commit info (with its custom metadata) of ``version`` (metadata shows versions
    as text)."""
    for commit in location.open().history():
        if commit["version"] == int(version):
            return commit
    raise AssertionError(f"no version {version} in the history of {location.uri}")


def scores_by_key(table: pa.Table) -> dict[int, float]:
    """A prediction table's scores by customer id (to compare engines row by row)."""
    keys, scores = table.column("customer_id").to_pylist(), table.column("score").to_pylist()
    pairs = zip(keys, scores, strict=True)
    return {int(k): float(v) for k, v in pairs if k is not None and v is not None}
