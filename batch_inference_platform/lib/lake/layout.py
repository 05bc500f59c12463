"""Where each of the platform's tables lives: the platform-wide tables under the lake root,
and each deployment's tables (its source, validated, quarantine, predictions, archive)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from batch_inference_platform.lib.deployments.partitioning import Partitioning
from batch_inference_platform.lib.deployments.spec import Deployment
from batch_inference_platform.lib.lake.tables import DeltaLocation


@dataclass(frozen=True)
class DeploymentTables:
    """The tables of one deployment, all partitioned by its ``partitioning``."""

    name: str
    partitioning: Partitioning
    features: DeltaLocation
    """The deployment's source table (``source.table`` of its defs.yaml)."""
    validated: DeltaLocation
    """Feature partitions that passed validation, compacted, in contract types."""
    quarantine: DeltaLocation
    """Rows that failed validation, each with the reasons."""
    predictions: DeltaLocation
    """The scores of the deployment's serving model."""
    archived_features: DeltaLocation
    """Source partitions that were scored, kept for ``lake.archive-retention``."""


@dataclass(frozen=True)
class LakeLayout:
    """Table locations under one lake root (a local path or an az:// / abfss:// URI)."""

    root: str
    storage_options: Mapping[str, str] | None = None
    archive_root: str = ""
    """Where processed input is archived (another container or tier); empty: under root."""

    def _at(self, path: str) -> DeltaLocation:
        return DeltaLocation(f"{self.root.rstrip('/')}/{path}", self.storage_options)

    def deployment(self, deployment: Deployment) -> DeploymentTables:
        """Where ``deployment``'s tables live: validated, quarantine and (by default)
        predictions under the root, the archive under ``archive_root``."""
        name = deployment.name
        archive = self.archive_root or f"{self.root.rstrip('/')}/archive"
        predictions = (
            DeltaLocation(deployment.predictions_uri, self.storage_options)
            if deployment.predictions_uri
            else self._at(f"predictions/{name}")
        )
        return DeploymentTables(
            name=name,
            partitioning=deployment.partitioning,
            features=DeltaLocation(deployment.source_uri, self.storage_options),
            validated=self._at(f"validated/{name}"),
            quarantine=self._at(f"quarantine/{name}"),
            predictions=predictions,
            archived_features=DeltaLocation(
                f"{archive.rstrip('/')}/features/{name}", self.storage_options
            ),
        )

    @property
    def realtime_events(self) -> DeltaLocation:
        """Journey, transaction and decision events, deduplicated, by tumbling window."""
        return self._at("realtime/events")

    @property
    def realtime_aggregates(self) -> DeltaLocation:
        """Per-customer activity in each window."""
        return self._at("realtime/customer_windows")

    @property
    def realtime_insights(self) -> DeltaLocation:
        """Per-customer insight and next best action for each window."""
        return self._at("realtime/insights")

    @property
    def catalog(self) -> DeltaLocation:
        """One row per dataset version produced, with lineage, for every deployment."""
        return self._at("catalog/datasets")
