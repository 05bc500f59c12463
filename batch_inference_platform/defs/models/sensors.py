"""Model promotions drive scoring: when a deployment's serving alias moves, re-score its recent
partitions (one sensor per deployment).

The sensor reads the webhook inbox with a cursor (a delivery about the watched model triggers
a check at once) and also asks the registry every tick, so a missed or unconfigured webhook
only delays the re-score (the registry may be MLflow OSS or Databricks: polling goes through
the MLflow client either way). The registry decides which version serves, and only the
recent days whose predictions were written by another version are re-scored; run keys
(model, version, partition) make duplicate deliveries and repeated ticks harmless.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import dagster as dg
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from batch_inference_platform.defs.resources import (
    InboxResource,
    LakeResource,
    ModelRegistryResource,
)
from batch_inference_platform.defs.scope import DeploymentScope
from batch_inference_platform.lib.deployments.partitioning import WHOLE_TABLE, Partitioning
from batch_inference_platform.lib.inbox.store import InboxEvent
from batch_inference_platform.lib.lake.lineage import latest_commits
from batch_inference_platform.lib.lake.tables import DeltaLocation, snapshot
from batch_inference_platform.lib.registry.client import ModelNotFoundError

if TYPE_CHECKING:
    from batch_inference_platform.defs.inference.schedules import AssetJob


def build_model_update_sensor(
    scope: DeploymentScope, job: AssetJob, rescore_partitions: int
) -> dg.SensorDefinition:
    """The deployment's sensor, re-scoring its ``rescore_partitions`` most recent partitions."""
    deployment = scope.deployment
    model_name, alias = deployment.model_name, deployment.alias
    partitioning = deployment.partitioning

    @dg.sensor(
        name=scope.job_name("mlflow_model_update_sensor"),
        job=job,
        minimum_interval_seconds=30,
        description=f"{deployment.name}: re-scores the most recent partitions when "
        f"{model_name}@{alias} moves (MLflow/Databricks webhooks via the inbox, registry polling "
        "as backstop).",
    )
    def mlflow_model_update_sensor(
        context: dg.SensorEvaluationContext,
        inbox: InboxResource,
        registry: ModelRegistryResource,
        lake: LakeResource,
    ) -> dg.SensorResult:
        cursor = json.loads(context.cursor) if context.cursor else {"inbox": 0, "version": None}
        events = inbox.store.read_after(int(cursor["inbox"]))
        mentioned = [e for e in events if _mentions(e, model_name)]
        if events:
            cursor["inbox"] = events[-1].id
        try:
            holder = registry.registry.by_alias(model_name, alias).version
        except ModelNotFoundError as error:
            context.log.warning(str(error))
            return dg.SensorResult(cursor=json.dumps(cursor), skip_reason=str(error))
        if holder == cursor["version"] and not mentioned:
            return dg.SensorResult(
                cursor=json.dumps(cursor),
                skip_reason=f"{model_name}@{alias} is still v{holder}",
            )
        cursor["version"] = holder
        stale = _scored_by_other_versions(
            lake.layout.deployment(deployment).predictions, partitioning, holder, rescore_partitions
        )
        if not stale:
            return dg.SensorResult(
                cursor=json.dumps(cursor),
                skip_reason=f"the {rescore_partitions} most recent scored partitions already carry "
                f"{model_name} v{holder}",
            )
        requests = [
            _rescore_request(deployment.name, model_name, holder, keys)
            for keys in _contiguous(partitioning, stale)
        ]
        context.log.info(f"{model_name}@{alias} is v{holder}: re-scoring {', '.join(stale)}")
        return dg.SensorResult(run_requests=requests, cursor=json.dumps(cursor))

    return mlflow_model_update_sensor


def _scored_by_other_versions(
    predictions: DeltaLocation, partitioning: Partitioning, version: int, recent: int
) -> list[str]:
    """Of the ``recent`` most recent scored partitions (never-scored ones have nothing to
    re-score), those whose latest predictions were not written by ``version``."""
    keys = (
        snapshot(predictions, partitioning).partitions()[-recent:] if predictions.exists() else []
    )
    commits = latest_commits(predictions, keys)  # one read of the history
    return [
        key
        for key in keys
        if key not in commits or commits[key].info.get("model_version") != str(version)
    ]


def _contiguous(partitioning: Partitioning, keys: list[str]) -> list[list[str]]:
    """Sorted partition keys split into runs of consecutive partitions."""
    groups: list[list[str]] = []
    for key in keys:
        if groups and partitioning.next_key(groups[-1][-1]) == key:
            groups[-1].append(key)
        else:
            groups.append([key])
    return groups


def _rescore_request(deployment: str, model: str, version: int, keys: list[str]) -> dg.RunRequest:
    """One run re-scoring consecutive partitions (the model is resolved and loaded once); the
    run key names deployment, model, version and partitions, so a repeated delivery or tick
    starts nothing new."""
    first, last = keys[0], keys[-1]
    tags = {"deployment": deployment, "model": model, "model_version": str(version)}
    prefix = f"{deployment}:{model}:v{version}"
    if first == WHOLE_TABLE:
        return dg.RunRequest(run_key=f"{prefix}:{first}", tags=tags)
    if first == last:
        return dg.RunRequest(run_key=f"{prefix}:{first}", partition_key=first, tags=tags)
    return dg.RunRequest(
        run_key=f"{prefix}:{first}..{last}",
        tags={
            **tags,
            ASSET_PARTITION_RANGE_START_TAG: first,
            ASSET_PARTITION_RANGE_END_TAG: last,
        },
    )


def _mentions(event: InboxEvent, model_name: str) -> bool:
    """Whether a delivery concerns ``model_name`` (MLflow nests it in data, Databricks not)."""
    data = event.payload.get("data", event.payload)
    return model_name in (data.get("name"), data.get("model_name"))
