"""The resources every asset uses: the lake, the model registry and the quality policy."""

import dagster as dg
import pydantic

from batch_inference_platform.lib.lake.layout import LakeLayout
from batch_inference_platform.lib.quality.validation import ValidationPolicy
from batch_inference_platform.lib.registry.client import ModelRegistry, ModelVersionInfo


class LakeResource(dg.ConfigurableResource):
    """The Delta lake the platform reads features from and writes results to."""

    root: str
    storage_options: dict[str, str] = pydantic.Field(default_factory=dict)

    @property
    def layout(self) -> LakeLayout:
        return LakeLayout(self.root, self.storage_options or None)


class ModelRegistryResource(dg.ConfigurableResource):
    """The MLflow tracking server and model registry, and the model this platform serves."""

    tracking_uri: str
    registry_uri: str = ""
    artifact_root: str
    experiment: str
    model_name: str
    alias: str

    @property
    def registry(self) -> ModelRegistry:
        return ModelRegistry(self.tracking_uri, self.registry_uri or None)

    def link(self, version: ModelVersionInfo) -> str:
        """Where a person finds the version: the MLflow UI when served over HTTP, else its URI."""
        if self.tracking_uri.startswith(("http://", "https://")):
            base = self.tracking_uri.rstrip("/")
            return f"{base}/#/models/{version.name}/versions/{version.version}"
        return version.uri


class QualityPolicyResource(dg.ConfigurableResource):
    """Limits a partition must meet to be scored, and the drift alarm level."""

    min_rows: int
    max_null_rate: float
    max_quarantine_rate: float
    max_duplicate_rate: float
    psi_threshold: float
    drift_bins: int

    @property
    def validation(self) -> ValidationPolicy:
        return ValidationPolicy(
            min_rows=self.min_rows,
            max_null_rate=self.max_null_rate,
            max_quarantine_rate=self.max_quarantine_rate,
            max_duplicate_rate=self.max_duplicate_rate,
        )
