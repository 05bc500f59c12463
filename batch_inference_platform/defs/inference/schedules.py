"""The scoring schedule from application.yml and the jobs people launch."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from batch_inference_platform.defs.catalog.assets import CATALOG_KEY
from batch_inference_platform.defs.features.assets import FEATURES_KEY
from batch_inference_platform.defs.inference.assets import PREDICTIONS_KEY
from batch_inference_platform.defs.models.assets import DEMO_MODEL_KEY, MODEL_VERSIONS_KEY
from batch_inference_platform.defs.partitions import DAILY_PARTITIONS
from batch_inference_platform.defs.validation.assets import VALIDATED_KEY

ARCHIVE_KEY = dg.AssetKey("archived_features")

score_partition_job = dg.define_asset_job(
    "score_partition_job",
    selection=dg.AssetSelection.assets(
        VALIDATED_KEY, MODEL_VERSIONS_KEY, PREDICTIONS_KEY, CATALOG_KEY, ARCHIVE_KEY
    ),
    partitions_def=DAILY_PARTITIONS,
    description="Validate, resolve the serving model, score, catalog and archive one day.",
)

rescore_job = dg.define_asset_job(
    "rescore_job",
    selection=dg.AssetSelection.assets(MODEL_VERSIONS_KEY, PREDICTIONS_KEY, CATALOG_KEY),
    partitions_def=DAILY_PARTITIONS,
    description="Re-score already validated days with the serving model (after a promotion); "
    "one run covers a range of days and loads the model once.",
)

generate_features_job = dg.define_asset_job(
    "generate_features_job",
    selection=dg.AssetSelection.assets(FEATURES_KEY),
    partitions_def=DAILY_PARTITIONS,
    description="Locally: generate one day of synthetic credit-risk features.",
)

train_demo_model_job = dg.define_asset_job(
    "train_demo_model_job",
    selection=dg.AssetSelection.assets(DEMO_MODEL_KEY),
    description="Locally: train the demo model and give it the serving alias.",
)


def build_scoring_schedule(cron: str) -> dg.ScheduleDefinition:
    """Score the latest complete day on ``cron``; one run per day however often it ticks."""

    @dg.schedule(
        name="score_latest_partition_schedule",
        cron_schedule=cron,
        job=score_partition_job,
        execution_timezone="UTC",
        description="Scores the most recent complete daily partition. The run key is the "
        "partition, so hourly ticks start each day's run once.",
    )
    def score_latest_partition(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        now = context.scheduled_execution_time or dt.datetime.now(dt.UTC)
        day = (now.astimezone(dt.UTC) - dt.timedelta(days=1)).date().isoformat()
        return dg.RunRequest(run_key=day, partition_key=day)

    return score_latest_partition
