"""Model promotions drive scoring: when the serving alias moves, re-score recent partitions.

The sensor reads the webhook inbox with a cursor (a delivery about the watched model triggers
a check at once) and also asks the registry every tick, so a missed or unconfigured webhook
only delays the re-score. The registry decides which version serves; run keys (model,
version, partition) make duplicate deliveries and repeated ticks harmless.
"""

import json

import dagster as dg

from batch_inference_platform.defs.inference.schedules import score_partition_job
from batch_inference_platform.defs.resources import (
    InboxResource,
    LakeResource,
    ModelRegistryResource,
)
from batch_inference_platform.lib.inbox.store import InboxEvent
from batch_inference_platform.lib.lake.tables import snapshot
from batch_inference_platform.lib.registry.client import ModelNotFoundError


def build_model_update_sensor(rescore_partitions: int) -> dg.SensorDefinition:
    """The sensor, re-scoring the ``rescore_partitions`` most recent daily partitions."""

    @dg.sensor(
        name="mlflow_model_update_sensor",
        job=score_partition_job,
        minimum_interval_seconds=30,
        description="Re-scores the most recent partitions when the watched model's serving "
        "alias moves (MLflow/Databricks webhooks via the inbox, registry polling as backstop).",
    )
    def mlflow_model_update_sensor(
        context: dg.SensorEvaluationContext,
        inbox: InboxResource,
        registry: ModelRegistryResource,
        lake: LakeResource,
    ) -> dg.SensorResult:
        cursor = json.loads(context.cursor) if context.cursor else {"inbox": 0, "version": None}
        events = inbox.store.read_after(int(cursor["inbox"]))
        mentioned = [e for e in events if _mentions(e, registry.model_name)]
        if events:
            cursor["inbox"] = events[-1].id
        try:
            holder = registry.registry.by_alias(registry.model_name, registry.alias).version
        except ModelNotFoundError as error:
            context.log.warning(str(error))
            return dg.SensorResult(cursor=json.dumps(cursor), skip_reason=str(error))
        if holder == cursor["version"]:
            reason = f"{registry.model_name}@{registry.alias} is still v{holder}"
            if mentioned:
                reason += f" ({len(mentioned)} webhook deliveries checked)"
            return dg.SensorResult(cursor=json.dumps(cursor), skip_reason=reason)
        cursor["version"] = holder
        # Re-score what was scored before: days with no features would only fail.
        scored = lake.layout.predictions(registry.model_name)
        days = snapshot(scored).days() if scored.exists() else []
        keys = [day.isoformat() for day in days[-rescore_partitions:]]
        requests = [
            dg.RunRequest(
                run_key=f"{registry.model_name}:v{holder}:{key}",
                partition_key=key,
                tags={"model": registry.model_name, "model_version": str(holder)},
            )
            for key in keys
        ]
        context.log.info(
            f"{registry.model_name}@{registry.alias} moved to v{holder}: re-scoring {keys}"
        )
        return dg.SensorResult(run_requests=requests, cursor=json.dumps(cursor))

    return mlflow_model_update_sensor


def _mentions(event: InboxEvent, model_name: str) -> bool:
    """Whether a delivery concerns ``model_name`` (MLflow nests it in data, Databricks not)."""
    data = event.payload.get("data", event.payload)
    return model_name in (data.get("name"), data.get("model_name"))
