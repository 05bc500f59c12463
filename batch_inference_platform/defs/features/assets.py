"""Feature tables: generated locally for the demo, observed as external Delta tables elsewhere."""

import datetime as dt

import dagster as dg

from batch_inference_platform.defs.partitions import (
    DAILY_PARTITIONS,
    SINGLE_RUN_BACKFILL,
    Stopwatch,
    combine_checks,
    partition_days,
)
from batch_inference_platform.defs.resources import LakeResource
from batch_inference_platform.lib.features.synthetic import generate_partition, raw_schema
from batch_inference_platform.lib.lake.tables import count_partition, replace_partition

FEATURES_KEY = dg.AssetKey("feature_tables")


class FeatureGenerationConfig(dg.Config):
    """How much synthetic data one demo day holds."""

    rows: int = 200_000
    seed: int = 7


@dg.asset(
    key=FEATURES_KEY,
    partitions_def=DAILY_PARTITIONS,
    backfill_policy=SINGLE_RUN_BACKFILL,
    group_name="features",
    kinds={"deltalake"},
    description="Daily credit-risk features per customer (synthetic, deterministic, local only).",
    check_specs=[dg.AssetCheckSpec("partition_not_empty", asset=FEATURES_KEY)],
)
def feature_tables(
    context: dg.AssetExecutionContext, config: FeatureGenerationConfig, lake: LakeResource
) -> dg.MaterializeResult:
    watch = Stopwatch()
    location = lake.layout.features
    commits = {
        day: replace_partition(
            location,
            day,
            generate_partition(day, config.rows, seed=config.seed),
            raw_schema(),
            commit_metadata={"dagster_run_id": context.run_id, "partition": day.isoformat()},
        )
        for day in partition_days(context)
    }
    return dg.MaterializeResult(
        metadata={
            **watch.metadata(sum(c.rows for c in commits.values())),
            "delta_version": max(c.version for c in commits.values()),
            "table_uri": dg.MetadataValue.path(location.uri),
        },
        check_results=[
            combine_checks(
                "partition_not_empty",
                {day: (c.rows > 0, f"{c.rows} rows") for day, c in commits.items()},
            )
        ],
    )


@dg.observable_source_asset(
    key=FEATURES_KEY,
    group_name="features",
    description="Daily credit-risk features per customer, landed by the upstream feature "
    "pipeline as an external Delta table partitioned by event_date.",
)
def observed_feature_tables(
    context: dg.AssetExecutionContext, lake: LakeResource
) -> dg.ObserveResult:
    location = lake.layout.features
    table = location.open()
    partitions = sorted(p["event_date"] for p in table.partitions())
    latest = partitions[-1] if partitions else None
    metadata: dict[str, dg.MetadataValue] = {
        "delta_version": dg.MetadataValue.int(table.version()),
        "partitions": dg.MetadataValue.int(len(partitions)),
        "table_uri": dg.MetadataValue.path(location.uri),
    }
    if latest:
        rows = count_partition(location, dt.date.fromisoformat(latest))
        metadata |= {
            "latest_partition": dg.MetadataValue.text(latest),
            "latest_partition_rows": dg.MetadataValue.int(rows),
        }
    return dg.ObserveResult(data_version=dg.DataVersion(str(table.version())), metadata=metadata)
