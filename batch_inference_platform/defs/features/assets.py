"""Feature tables: generated locally for a demo deployment, observed as Delta tables elsewhere."""

from collections.abc import Iterator
from typing import Any

import dagster as dg

from batch_inference_platform.defs import display
from batch_inference_platform.defs.partitions import (
    Stopwatch,
    Verdict,
    check_spec,
    per_partition_results,
)
from batch_inference_platform.defs.resources import LakeResource
from batch_inference_platform.defs.scope import DeploymentScope
from batch_inference_platform.lib.features.generators import GENERATORS
from batch_inference_platform.lib.lake.tables import count_partition, replace_partition, snapshot

NOT_EMPTY_CHECK = "partition_not_empty"


class FeatureGenerationConfig(dg.Config):
    """How much synthetic data one demo partition holds."""

    rows: int = 200_000
    seed: int = 7


def build_generated_features(scope: DeploymentScope) -> dg.AssetsDefinition:
    """The demo source of ``scope``: its generator writes each partition (local only)."""
    deployment = scope.deployment
    assert deployment.generator is not None
    source = GENERATORS[deployment.generator]

    @dg.asset(
        key=scope.features,
        partitions_def=scope.partitions_def,
        backfill_policy=scope.backfill_policy,
        group_name=scope.group,
        kinds={"deltalake"},
        description=f"{deployment.name}: synthetic features from the {deployment.generator} "
        f"demo generator (deterministic, local only), written to {deployment.source_uri}.",
        check_specs=[
            check_spec(
                NOT_EMPTY_CHECK,
                scope.features,
                "The generated partition has at least one row.",
                scope.partitions_def,
            )
        ],
    )
    def feature_tables(
        context: dg.AssetExecutionContext, config: FeatureGenerationConfig, lake: LakeResource
    ) -> Iterator[dg.MaterializeResult | dg.Output | dg.AssetCheckEvaluation]:
        tables = lake.layout.deployment(deployment)
        partitioning = deployment.partitioning
        schema = source.schema_for(partitioning)
        figures: dict[str, dict[str, Any]] = {}
        for key in scope.partition_keys(context):
            watch = Stopwatch()
            commit = replace_partition(
                tables.features,
                partitioning,
                key,
                source.generate(partitioning, key, config.rows, config.seed),
                schema,
                commit_metadata={"dagster_run_id": context.run_id, "partition": key},
            )
            figures[key] = {
                "dagster/row_count": commit.rows,
                "delta_version": display.identifier(commit.version),
                "seconds": round(watch.seconds, 3),
            }
        yield from per_partition_results(
            context,
            metadata=display.table(tables.features.uri, schema),
            partitions=figures,
            verdicts={
                NOT_EMPTY_CHECK: {
                    key: Verdict(
                        values["dagster/row_count"] > 0,
                        f"{key}: {values['dagster/row_count']:,} rows.",
                        {"rows": values["dagster/row_count"]},
                    )
                    for key, values in figures.items()
                }
            },
        )

    return feature_tables


def build_observed_features(scope: DeploymentScope) -> dg.SourceAsset:
    """The deployment's source: an external Delta table, observed for its version."""
    deployment = scope.deployment

    @dg.observable_source_asset(
        key=scope.features,
        group_name=scope.group,
        description=f"{deployment.name}: features landed by an upstream pipeline in the Delta "
        f"table {deployment.source_uri}"
        + (
            f", partitioned by {deployment.partitioning.column}."
            if deployment.partitioning.column
            else "."
        ),
    )
    def observed_feature_tables(
        context: dg.AssetExecutionContext, lake: LakeResource
    ) -> dg.ObserveResult:
        tables = lake.layout.deployment(deployment)
        current = snapshot(tables.features, deployment.partitioning)
        partitions = current.partitions()
        metadata: dict[str, dg.MetadataValue] = {
            **display.table(tables.features.uri, current.schema),
            "delta_version": display.identifier(current.version),
            "partitions": dg.MetadataValue.int(len(partitions)),
        }
        if partitions:
            latest = partitions[-1]
            rows = count_partition(tables.features, deployment.partitioning, latest)
            metadata |= {
                "latest_partition": dg.MetadataValue.text(latest),
                "latest_partition_rows": dg.MetadataValue.int(rows),
            }
        return dg.ObserveResult(
            data_version=dg.DataVersion(str(current.version)), metadata=metadata
        )

    return observed_feature_tables
