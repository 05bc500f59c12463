"""Where each of the platform's tables lives under the lake root."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from batch_inference_platform.lib.lake.tables import DeltaLocation


@dataclass(frozen=True)
class LakeLayout:
    """Table locations under one lake root (a local path or an az:// / abfss:// URI)."""

    root: str
    storage_options: Mapping[str, str] | None = None
    archive_root: str = ""
    """Where processed input is archived (another container or tier); empty: under root."""

    def _at(self, path: str) -> DeltaLocation:
        return DeltaLocation(f"{self.root.rstrip('/')}/{path}", self.storage_options)

    @property
    def features(self) -> DeltaLocation:
        """Raw daily credit-risk features, as landed by the feature pipeline."""
        return self._at("features/credit_risk")

    @property
    def validated(self) -> DeltaLocation:
        """Feature partitions that passed validation, compacted, in contract types."""
        return self._at("validated/credit_risk")

    @property
    def quarantine(self) -> DeltaLocation:
        """Rows that failed validation, each with the reasons."""
        return self._at("quarantine/credit_risk")

    def predictions(self, model_name: str) -> DeltaLocation:
        """Scores of one registered model, partitioned by date."""
        return self._at(f"predictions/{model_name}")

    @property
    def archived_features(self) -> DeltaLocation:
        """Raw feature partitions that were scored, kept for ``lake.archive-retention``."""
        base = self.archive_root or f"{self.root.rstrip('/')}/archive"
        return DeltaLocation(f"{base.rstrip('/')}/features/credit_risk", self.storage_options)

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
        """One row per dataset version produced, with lineage."""
        return self._at("catalog/datasets")
