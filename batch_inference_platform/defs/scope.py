"""What the Dagster objects of one deployment share: its asset keys, group and partitions."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import dagster as dg

from batch_inference_platform.lib.deployments.partitioning import Partitioning, PartitionKind
from batch_inference_platform.lib.deployments.spec import Deployment

PLATFORM_GROUP = "platform"
"""The group of what all deployments share (real-time insights, SLA report, lake upkeep);
each deployment has a group of its own, named after it."""


AZURE_SCHEMES = ("az://", "abfs://", "abfss://", "azure://")
"""Table URIs on Azure Data Lake Storage (as delta-rs reads them)."""


def on_azure(uri: str) -> bool:
    """Whether the table at ``uri`` lives on ADLS."""
    return uri.lower().startswith(AZURE_SCHEMES)


def placed(spec: dg.AssetSpec, uris: Iterable[str], owners: Sequence[str]) -> dg.AssetSpec:
    """``spec`` owned by ``owners``, with the storage kind ``azure`` exactly when one of the
    tables it writes (``uris``) lives on ADLS (other kinds as declared)."""
    kinds = set(spec.kinds) - {"azure"}
    if any(on_azure(uri) for uri in uris):
        kinds.add("azure")
    return spec.replace_attributes(owners=list(owners), kinds=kinds)


def partitions_def(partitioning: Partitioning) -> dg.PartitionsDefinition | None:
    """Dagster's partitions for a deployment: one per day or hour (UTC) from its start."""
    start = partitioning.start
    if partitioning.kind is PartitionKind.DAILY and start is not None:
        return dg.DailyPartitionsDefinition(start_date=start.strftime("%Y-%m-%d"))
    if partitioning.kind is PartitionKind.HOURLY and start is not None:
        return dg.HourlyPartitionsDefinition(start_date=start.strftime("%Y-%m-%d-%H:%M"))
    return None


@dataclass(frozen=True)
class DeploymentScope:
    """One deployment's place in the asset graph: keys ``<name>/...`` in group ``<name>``."""

    deployment: Deployment

    @property
    def name(self) -> str:
        return self.deployment.name

    @property
    def group(self) -> str:
        return self.deployment.name

    def key(self, asset: str) -> dg.AssetKey:
        return dg.AssetKey([self.deployment.name, asset])

    @property
    def features(self) -> dg.AssetKey:
        return self.key("feature_tables")

    @property
    def validated(self) -> dg.AssetKey:
        return self.key("validated_features")

    @property
    def model_versions(self) -> dg.AssetKey:
        return self.key("model_versions")

    @property
    def predictions(self) -> dg.AssetKey:
        return self.key("predictions")

    @property
    def catalog(self) -> dg.AssetKey:
        return self.key("catalog_entries")

    @property
    def archive(self) -> dg.AssetKey:
        return self.key("archived_features")

    @property
    def demo_model(self) -> dg.AssetKey:
        return self.key("demo_model")

    @property
    def partitions_def(self) -> dg.PartitionsDefinition | None:
        return partitions_def(self.deployment.partitioning)

    @property
    def backfill_policy(self) -> dg.BackfillPolicy | None:
        """A backfill is one run over the whole range: start-up and model loading are paid
        once, and each partition still commits on its own."""
        return dg.BackfillPolicy.single_run() if self.partitions_def is not None else None

    def partition_keys(self, context: dg.AssetExecutionContext) -> list[str]:
        """The partitions this run materializes: one, many for a backfill, or the whole table."""
        keys = (
            context.partition_keys
            if context.has_partition_key_range or (context.has_partition_key)
            else []
        )
        return self.deployment.partitioning.keys(list(keys))

    def job_name(self, job: str) -> str:
        return f"{self.deployment.name}__{job}"
