"""Model promotions drive scoring: when the serving alias moves, re-score recent partitions.

The sensor reads the webhook inbox with a cursor (a delivery about the watched model triggers
a check at once) and also asks the registry every tick, so a missed or unconfigured webhook
only delays the re-score (the registry may be MLflow OSS or Databricks: polling goes through
the MLflow client either way). The registry decides which version serves, and only the
recent days whose predictions were written by another version are re-scored; run keys
(model, version, partition) make duplicate deliveries and repeated ticks harmless.
"""

import datetime as dt
import json

import dagster as dg
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from batch_inference_platform.defs.inference.schedules import rescore_job
from batch_inference_platform.defs.resources import (
    InboxResource,
    LakeResource,
    ModelRegistryResource,
)
from batch_inference_platform.lib.inbox.store import InboxEvent
from batch_inference_platform.lib.lake.lineage import latest_commits
from batch_inference_platform.lib.lake.tables import DeltaLocation, snapshot
from batch_inference_platform.lib.registry.client import ModelNotFoundError


def build_model_update_sensor(rescore_partitions: int) -> dg.SensorDefinition:
    """The sensor, re-scoring the ``rescore_partitions`` most recent daily partitions."""

    @dg.sensor(
        name="mlflow_model_update_sensor",
        job=rescore_job,
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
        if holder == cursor["version"] and not mentioned:
            return dg.SensorResult(
                cursor=json.dumps(cursor),
                skip_reason=f"{registry.model_name}@{registry.alias} is still v{holder}",
            )
        cursor["version"] = holder
        stale = _scored_by_other_versions(
            lake.layout.predictions(registry.model_name), holder, rescore_partitions
        )
        if not stale:
            return dg.SensorResult(
                cursor=json.dumps(cursor),
                skip_reason=f"the {rescore_partitions} most recent scored days already carry "
                f"{registry.model_name} v{holder}",
            )
        requests = [
            _rescore_request(registry.model_name, holder, days) for days in _contiguous(stale)
        ]
        context.log.info(
            f"{registry.model_name}@{registry.alias} is v{holder}: re-scoring "
            f"{', '.join(day.isoformat() for day in stale)}"
        )
        return dg.SensorResult(run_requests=requests, cursor=json.dumps(cursor))

    return mlflow_model_update_sensor


def _scored_by_other_versions(
    predictions: DeltaLocation, version: int, recent: int
) -> list[dt.date]:
    """Of the ``recent`` most recent scored days (days never scored have nothing to re-score),
    those whose latest predictions were not written by ``version``."""
    days = snapshot(predictions).days()[-recent:] if predictions.exists() else []
    commits = latest_commits(predictions, days)  # one read of the history
    return [
        day
        for day in days
        if day not in commits or commits[day].info.get("model_version") != str(version)
    ]


def _contiguous(days: list[dt.date]) -> list[list[dt.date]]:
    """Sorted days split into runs of consecutive days."""
    groups: list[list[dt.date]] = []
    for day in days:
        if groups and day - groups[-1][-1] == dt.timedelta(days=1):
            groups[-1].append(day)
        else:
            groups.append([day])
    return groups


def _rescore_request(model: str, version: int, days: list[dt.date]) -> dg.RunRequest:
    """One run re-scoring consecutive ``days`` (the model is resolved and loaded once); the run
    key names model, version and days, so a repeated delivery or tick starts nothing new."""
    first, last = days[0].isoformat(), days[-1].isoformat()
    tags = {"model": model, "model_version": str(version)}
    if first == last:
        return dg.RunRequest(run_key=f"{model}:v{version}:{first}", partition_key=first, tags=tags)
    return dg.RunRequest(
        run_key=f"{model}:v{version}:{first}..{last}",
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
