"""Inference metrics logged back to MLflow, so a model's page shows where it was used."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from mlflow.entities import Metric, Param, RunTag

from batch_inference_platform.lib.registry.client import ModelRegistry, ModelVersionInfo
from batch_inference_platform.lib.registry.training import ensure_experiment

LAST_SCORING_RUN_TAG = "last_scoring_run"


def log_scoring_run(
    registry: ModelRegistry,
    *,
    experiment: str,
    artifact_root: str,
    version: ModelVersionInfo,
    dagster_run_id: str,
    partitions: Sequence[str],
    metrics: Mapping[str, float],
    tags: Mapping[str, str] | None = None,
) -> str:
    """Record one scoring run as an MLflow run and point the model version at it."""
    client = registry.client
    run = client.create_run(
        ensure_experiment(registry, experiment, artifact_root),
        run_name=f"score-{version.name}-v{version.version}",
        tags={
            "dagster_run_id": dagster_run_id,
            "model_name": version.name,
            "model_version": str(version.version),
            "mlflow.source.name": "batch_inference_platform",
            **(tags or {}),
        },
    )
    now = int(time.time() * 1000)
    client.log_batch(
        run.info.run_id,
        metrics=[Metric(key, float(value), now, 0) for key, value in metrics.items()],
        params=[Param("partitions", ",".join(partitions)[:6000])],
        tags=[RunTag("model_uri", version.uri)],
    )
    client.set_terminated(run.info.run_id)
    client.set_model_version_tag(
        version.name, str(version.version), LAST_SCORING_RUN_TAG, run.info.run_id
    )
    return run.info.run_id
