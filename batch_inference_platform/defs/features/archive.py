"""Processed input archived (the seed's "archive processed data"): once a day is scored, its
raw feature partition is copied to the archive table, and archived days older than
``lake.archive-retention`` are deleted."""

import datetime as dt

import dagster as dg

from batch_inference_platform.defs.features.assets import FEATURES_KEY
from batch_inference_platform.defs.inference.assets import PREDICTIONS_KEY
from batch_inference_platform.defs.partitions import (
    DAILY_PARTITIONS,
    SINGLE_RUN_BACKFILL,
    Stopwatch,
    partition_days,
)
from batch_inference_platform.defs.resources import LakeResource
from batch_inference_platform.lib.features.contract import DATE_COLUMN
from batch_inference_platform.lib.lake.tables import read_partition, replace_partition, snapshot

ARCHIVE_KEY = dg.AssetKey("archived_features")


@dg.asset(
    key=ARCHIVE_KEY,
    deps=[FEATURES_KEY, PREDICTIONS_KEY],
    partitions_def=DAILY_PARTITIONS,
    backfill_policy=SINGLE_RUN_BACKFILL,
    group_name="catalog",
    kinds={"deltalake", "azure"},
    description="Raw feature partitions that were scored, copied to the archive (another "
    "container or tier on ADLS) and kept for lake.archive-retention.",
)
def archived_features(
    context: dg.AssetExecutionContext, lake: LakeResource
) -> dg.MaterializeResult:
    watch = Stopwatch()
    layout = lake.layout
    source, archive = layout.features, layout.archived_features
    schema = snapshot(source).schema
    rows, versions = 0, {}
    for day in partition_days(context):
        commit = replace_partition(
            archive,
            day,
            read_partition(source, day),
            schema,
            commit_metadata={"partition": day.isoformat(), "dagster_run_id": context.run_id},
        )
        rows += commit.rows
        versions[day.isoformat()] = commit.version
    cutoff = max(partition_days(context)) - dt.timedelta(days=lake.archive_retention_days)
    table = archive.open()
    expired = [d for d in snapshot(archive).days() if d < cutoff]
    if expired:
        table.delete(f"{DATE_COLUMN} < '{cutoff.isoformat()}'")
        context.log.info(f"archive: deleted {len(expired)} days before {cutoff}")
    return dg.MaterializeResult(
        metadata={
            **watch.metadata(rows),
            "archive_uri": dg.MetadataValue.path(archive.uri),
            "delta_versions": dg.MetadataValue.json(versions),
            "retention_days": lake.archive_retention_days,
            "expired_days_deleted": [d.isoformat() for d in expired],
        }
    )
