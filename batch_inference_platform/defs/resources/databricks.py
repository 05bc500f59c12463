"""``engine_databricks``: the Spark job as a one-time run on a new Azure Databricks job cluster,
through Dagster Pipes (``PipesDatabricksClient``; Dagster's successor to the superseded
``databricks_pyspark_step_launcher``).

The platform builds its wheel and uploads it for the cluster to install, sizes the cluster
from earlier runs, retries on a smaller cluster when Azure lacks quota or capacity, and cancels
the run (and so its cluster) when the Dagster run is cancelled.
"""

import datetime as dt
import os
from dataclasses import replace

import dagster as dg
import pydantic
from dagster import PipesClientCompletedInvocation
from dagster._core.errors import DagsterPipesExecutionError  # raised by Pipes clients
from databricks.sdk import WorkspaceClient
from databricks.sdk.service import compute, jobs

from batch_inference_platform.defs.resources.alerts import AlertsResource
from batch_inference_platform.defs.resources.engines import ScoringEngineResource, engine_result
from batch_inference_platform.defs.resources.lake import LakeResource
from batch_inference_platform.defs.resources.registry import ModelRegistryResource
from batch_inference_platform.lib.alerts import Alert
from batch_inference_platform.lib.databricks.artifact import prepared_wheel
from batch_inference_platform.lib.databricks.cluster import (
    ClusterSize,
    ClusterTemplate,
    is_capacity_error,
)
from batch_inference_platform.lib.databricks.sizing import PastRun, recommend_workers
from batch_inference_platform.lib.lake.tables import snapshot
from batch_inference_platform.lib.scoring.request import REQUEST_EXTRA, EngineResult, ScoringRequest

PACKAGE = "batch_inference_platform"
ENTRY_POINT = "score-partitions"
HISTORY_RUNS = 20
HISTORY_ASSET = "predictions"
"""The last part of every deployment's prediction asset key (``<deployment>/predictions``)."""


class DatabricksEngineResource(ScoringEngineResource):
    """Scoring on Azure Databricks job clusters (settings: ``batch-inference.databricks`` and
    ``batch-inference.spark.cluster``)."""

    host: str
    token: str = ""
    """A personal access token; empty: the SDK's default authentication (Azure CLI, managed
    identity, service principal from ARM_* variables)."""
    spark_version: str
    node_type: str
    min_workers: int
    max_workers: int
    auto_scale: bool
    spark_conf: dict[str, str] = pydantic.Field(default_factory=dict)
    artifacts_dir: str = "dbfs:/batch-inference/artifacts"
    log_dir: str = "dbfs:/batch-inference/cluster-logs"
    wheel: str = ""
    """A built wheel to install; empty: build it from the repository."""
    cluster_model_cache_dir: str = "/local_disk0/batch_inference/model_cache"
    target_minutes: float = 60
    poll_seconds: float = 10
    alerts: AlertsResource | None = None
    """Where a cluster that cannot start (quota, capacity) is reported; None: the run log."""

    def score(
        self,
        context: dg.AssetExecutionContext | dg.OpExecutionContext,
        request: ScoringRequest,
        *,
        lake: LakeResource,
        registry: ModelRegistryResource,
    ) -> EngineResult:
        client = WorkspaceClient(host=self.host, token=self.token or None)
        library = prepared_wheel(client, self.artifacts_dir, self.wheel)
        context.log.info(f"cluster installs {library}")
        rows = _validated_rows(request)
        advice = recommend_workers(
            _history(context),
            rows,
            target_seconds=self.target_minutes * 60,
            min_workers=self.min_workers,
            max_workers=self.max_workers,
        )
        context.log.info(f"cluster sizing: {advice.workers} workers ({advice.basis})")
        size = ClusterSize(advice.workers, self.min_workers, self.auto_scale)
        remote = replace(request, model_cache_dir=self.cluster_model_cache_dir)
        attempts: list[str] = []
        while True:
            try:
                invocation = self._run(context, client, remote, size, library)
                break
            except DagsterPipesExecutionError as error:
                attempts.append(f"{size.workers} workers: {error}")
                smaller = size.smaller() if is_capacity_error(str(error)) else None
                if smaller is None:
                    raise dg.Failure(
                        description=f"Databricks scoring run failed after {len(attempts)} "
                        f"attempt(s): {error}",
                        metadata={"attempts": attempts},
                    ) from error
                message = (
                    f"a job cluster of {size.workers} workers could not start "
                    f"(quota or capacity): retrying with {smaller.workers} workers"
                )
                context.log.error(f"ALERT: {message}")
                if self.alerts is not None:
                    self.alerts.alert(
                        Alert(
                            title="Databricks cluster could not start",
                            job_name=context.job_name,
                            run_id=context.run_id,
                            error=f"{message}\n{error}",
                            link=self.alerts.link(context.run_id),
                            at=dt.datetime.now(dt.UTC),
                            where={"workspace": self.host, "node_type": self.node_type},
                            severity="warning",
                        )
                    )
                size = smaller
        result = engine_result(invocation.get_custom_messages())
        run_id = _run_id(invocation)
        run = client.jobs.get_run(run_id)
        result.metadata.update(
            scoring_engine=f"databricks ({self.node_type})",
            databricks_run_id=run_id,
            databricks_run_url=dg.MetadataValue.url(run.run_page_url or self.host),
            cluster_id=_cluster_id(run),
            workers=size.workers,
            recommended_workers=advice.workers,
            sizing_basis=advice.basis,
            expected_seconds=round(advice.expected_seconds or 0, 1),
            scoring_seconds=round(sum(r.seconds for r in result.scored.values()), 3),
            cluster_attempts=attempts or ["first cluster started"],
        )
        return result

    def _run(
        self,
        context: dg.AssetExecutionContext | dg.OpExecutionContext,
        client: WorkspaceClient,
        request: ScoringRequest,
        size: ClusterSize,
        library: str,
    ) -> PipesClientCompletedInvocation:
        template = ClusterTemplate(
            spark_version=self.spark_version,
            node_type=self.node_type,
            spark_conf=dict(self.spark_conf),
            log_destination=self.log_dir,
        )
        task = jobs.SubmitTask(
            task_key="score_partitions",
            new_cluster=template.spec(size, env=_cluster_env()),
            libraries=[compute.Library(whl=library)],
            python_wheel_task=jobs.PythonWheelTask(
                package_name=PACKAGE, entry_point=ENTRY_POINT, parameters=["--pipes", "dbfs"]
            ),
        )
        # Imported here: dagster-databricks costs every run worker ~1 s of start-up otherwise.
        from dagster_databricks import PipesDatabricksClient, PipesDbfsMessageReader

        pipes = PipesDatabricksClient(
            client=client,
            poll_interval_seconds=self.poll_seconds,
            message_reader=PipesDbfsMessageReader(
                client=client, interval=self.poll_seconds, include_stdio_in_messages=True
            ),
        )
        invocation = pipes.run(
            context=context,
            task=task,
            extras={REQUEST_EXTRA: request.to_json()},
            submit_args={"run_name": f"batch-inference {context.run_id[:8]} {request.keys[0]}"},
        )
        run_id = _run_id(invocation)
        state = client.jobs.get_run(run_id).state
        if state is not None and state.result_state == jobs.RunResultState.CANCELED:
            raise dg.Failure(f"Databricks run {run_id} was cancelled: {state.state_message}")
        return invocation


CLUSTER_ENV = ("AZURE_STORAGE_ACCOUNT_NAME",)
"""Non-secret settings the driver needs as environment variables (credentials on the cluster
come from its own identity or secret scope, never from here)."""


def _cluster_env() -> dict[str, str]:
    return {name: os.environ[name] for name in CLUSTER_ENV if os.environ.get(name)}


def _run_id(invocation: PipesClientCompletedInvocation) -> int:
    """The Databricks run id the Pipes client records in its metadata."""
    value = invocation.metadata["Databricks Job Run ID"]
    return int(str(getattr(value, "value", value)))


def _cluster_id(run: jobs.Run) -> str:
    if run.cluster_instance and run.cluster_instance.cluster_id:
        return run.cluster_instance.cluster_id
    for task in run.tasks or []:
        if task.cluster_instance and task.cluster_instance.cluster_id:
            return task.cluster_instance.cluster_id
    return ""


def _validated_rows(request: ScoringRequest) -> int:
    """Rows to score (from file statistics; an unreadable partition counts as none)."""
    validated = snapshot(request.validated, request.partition_spec)
    total = 0
    for key in request.keys:
        try:
            total += validated.count(key)
        except Exception:  # the job reports the unreadable partition; sizing just skips it
            continue
    return total


def _history(context: dg.AssetExecutionContext | dg.OpExecutionContext) -> list[PastRun]:
    """Earlier Databricks runs of any deployment's ``predictions`` (one entry per run, newest
    first): rows, scoring seconds and workers - the platform's throughput per worker, shared
    by every deployment and by client jobs."""
    instance = context.instance
    keys = [key for key in instance.get_asset_keys() if key.path[-1] == HISTORY_ASSET]
    records = sorted(
        (
            record
            for key in keys
            for record in instance.fetch_materializations(key, limit=HISTORY_RUNS).records
        ),
        key=lambda record: record.timestamp,
        reverse=True,
    )
    past, seen = [], set()
    for record in records:
        materialization = record.asset_materialization
        if materialization is None or record.run_id in seen:
            continue  # a multi-partition run records one materialization per partition
        seen.add(record.run_id)
        meta = {key: value.value for key, value in materialization.metadata.items()}
        if meta.get("engine") != "databricks":
            continue
        try:
            past.append(
                PastRun(
                    rows=int(meta["dagster/row_count"]),  # type: ignore[arg-type]
                    seconds=float(meta["scoring_seconds"]),  # type: ignore[arg-type]
                    workers=int(meta["workers"]),  # type: ignore[arg-type]
                )
            )
        except (KeyError, TypeError, ValueError):
            continue
    return past[:HISTORY_RUNS]
