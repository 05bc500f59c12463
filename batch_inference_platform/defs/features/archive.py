"""Processed input archived (the seed's "archive processed data"): once a partition is scored,
its raw feature partition is copied to the deployment's archive table, and archived partitions
older than ``lake.archive-retention`` are deleted."""

import datetime as dt
from collections.abc import Iterator
from typing import Any

import dagster as dg

from batch_inference_platform.defs import display
from batch_inference_platform.defs.partitions import Stopwatch, per_partition_results
from batch_inference_platform.defs.resources import LakeResource
from batch_inference_platform.defs.scope import DeploymentScope
from batch_inference_platform.lib.lake.tables import (
    partition_predicate,
    read_partition,
    replace_partition,
    snapshot,
)


def build_archived_features(scope: DeploymentScope) -> dg.AssetsDefinition:
    """``<name>/archived_features`` (partitioned deployments only: an unpartitioned source is
    its own latest state, nothing to archive by age)."""
    deployment = scope.deployment
    partitioning = deployment.partitioning

    @dg.asset(
        key=scope.archive,
        deps=[scope.features, scope.predictions],
        partitions_def=scope.partitions_def,
        backfill_policy=scope.backfill_policy,
        group_name=scope.group,
        kinds={"deltalake"},  # and "azure" when the archive is on ADLS (deployment_graph)
        description=f"{deployment.name}: raw feature partitions that were scored, copied to the "
        "archive (another container or tier on ADLS) and kept for lake.archive-retention.",
    )
    def archived_features(
        context: dg.AssetExecutionContext, lake: LakeResource
    ) -> Iterator[dg.MaterializeResult | dg.Output | dg.AssetCheckEvaluation]:
        tables = lake.layout.deployment(deployment)
        source, archive = tables.features, tables.archived_features
        schema = snapshot(source, partitioning).schema
        figures: dict[str, dict[str, Any]] = {}
        keys = scope.partition_keys(context)
        for key in keys:
            watch = Stopwatch()
            commit = replace_partition(
                archive,
                partitioning,
                key,
                read_partition(source, partitioning, key),
                schema,
                commit_metadata={"partition": key, "dagster_run_id": context.run_id},
            )
            figures[key] = {
                "dagster/row_count": commit.rows,
                "delta_version": display.identifier(commit.version),
                "seconds": round(watch.seconds, 3),
            }
        newest = max(partitioning.value(key) for key in keys)
        cutoff = newest - dt.timedelta(days=lake.archive_retention_days)
        expired = [
            key
            for key in snapshot(archive, partitioning).partitions()
            if partitioning.value(key) < cutoff
        ]
        if expired:
            predicate = " OR ".join(partition_predicate(partitioning, key) for key in expired)
            archive.open().delete(predicate)
            context.log.info(f"archive: deleted {len(expired)} partitions before {cutoff}")
        yield from per_partition_results(
            context,
            metadata={
                **display.table(archive.uri, schema),
                "retention_days": display.identifier(lake.archive_retention_days),
                "expired_partitions_deleted": dg.MetadataValue.json(expired),
            },
            partitions=figures,
            verdicts={},
        )

    return archived_features
