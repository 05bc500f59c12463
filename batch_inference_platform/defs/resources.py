"""The resources every asset uses: the lake, the model registry and the quality policy."""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import pydantic

from batch_inference_platform.config import KafkaSettings
from batch_inference_platform.lib.deployments.folder import read_deployments
from batch_inference_platform.lib.deployments.spec import Deployment
from batch_inference_platform.lib.inbox.job_store import JobStore
from batch_inference_platform.lib.inbox.relay import OutboxRelay
from batch_inference_platform.lib.inbox.store import WebhookInbox
from batch_inference_platform.lib.lake.azure import storage_options as azure_storage_options
from batch_inference_platform.lib.lake.layout import LakeLayout
from batch_inference_platform.lib.messaging.kafka import KafkaPublisher
from batch_inference_platform.lib.messaging.settings import KafkaConfig
from batch_inference_platform.lib.messaging.topics import Topics
from batch_inference_platform.lib.quality.validation import ValidationPolicy
from batch_inference_platform.lib.registry.client import ModelRegistry, ModelVersionInfo
from batch_inference_platform.lib.registry.loader import Sample, ServingScorer, load_scorer
from batch_inference_platform.lib.scoring.outputs import OutputSpec
from batch_inference_platform.lib.tenants import TenantDirectory, load_tenants


class LakeResource(dg.ConfigurableResource):
    """The Delta lake the platform reads features from and writes results to."""

    root: str
    storage_options: dict[str, str] = pydantic.Field(default_factory=dict)
    """Non-secret delta-rs options (e.g. ``use_emulator``); credentials come from the
    environment according to ``azure_auth`` when the layout is built."""
    azure_auth: str = "none"
    archive_root: str = ""
    archive_retention_days: float = 400

    @property
    def layout(self) -> LakeLayout:
        options = azure_storage_options(self.azure_auth, self.storage_options)  # type: ignore[arg-type]
        return LakeLayout(self.root, options or None, self.archive_root)

    @property
    def options(self) -> dict[str, str]:
        """The storage options with credentials (never log them)."""
        return azure_storage_options(self.azure_auth, self.storage_options)  # type: ignore[arg-type]


class ModelRegistryResource(dg.ConfigurableResource):
    """The MLflow tracking server and model registry (each deployment names its model)."""

    tracking_uri: str
    registry_uri: str = ""
    artifact_root: str
    experiment: str
    model_cache_dir: str
    """Where compiled models are cached (shared by every run and process on the machine)."""
    max_load_seconds: float = 300.0
    """A version that takes longer to load is refused (the smoke test)."""

    @property
    def registry(self) -> ModelRegistry:
        return ModelRegistry(self.tracking_uri, self.registry_uri or None)

    def scorer(
        self,
        version: ModelVersionInfo,
        sample: Sample,
        output: OutputSpec,
    ) -> ServingScorer:
        """The version's scorer bound to the declared output: compiled and verified once, then
        reused from the cache. Raises ``OutputMismatchError`` when the output does not fit."""
        return load_scorer(
            self.registry,
            version,
            output,
            sample,
            cache_root=Path(self.model_cache_dir),
        )

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

    def validation_for(self, overrides: Mapping[str, float | int]) -> ValidationPolicy:
        """The limits for a deployment: these, with the deployment's own ``checks`` on top."""
        return ValidationPolicy(
            min_rows=int(overrides.get("min_rows", self.min_rows)),
            max_null_rate=float(overrides.get("max_null_rate", self.max_null_rate)),
            max_quarantine_rate=float(
                overrides.get("max_quarantine_rate", self.max_quarantine_rate)
            ),
            max_duplicate_rate=float(overrides.get("max_duplicate_rate", self.max_duplicate_rate)),
        )

    def drift_for(self, overrides: Mapping[str, float | int]) -> tuple[float, int]:
        """The PSI alarm level and bin count for a deployment (its ``checks`` on top)."""
        return (
            float(overrides.get("psi_threshold", self.psi_threshold)),
            int(overrides.get("drift_bins", self.drift_bins)),
        )


class InboxResource(dg.ConfigurableResource):
    """The durable inbox the webhook receivers write and the sensors read."""

    url: str

    @property
    def store(self) -> WebhookInbox:
        return WebhookInbox(self.url)


class ClientRequestsResource(dg.ConfigurableResource):
    """What serves client requests: the tenants, the deployments they name, the job store
    (with its outbox) and Kafka."""

    jobs_url: str
    tenants_file: str
    lake_root: str
    environment: str = "local"
    kafka_settings: dict[str, Any]
    """``batch-inference.kafka`` as loaded from application.yml (no secrets: those stay in
    the environment variable it names)."""
    project_root: str = ""
    """What deployments' relative paths resolve against; empty: the folder holding the
    package (and application.yml)."""
    deployments_dir: str = ""
    """``batch-inference.deployments-dir``; empty: the package's ``defs/deployments``."""

    @property
    def deployments(self) -> dict[str, Deployment]:
        """The declared deployments by name (read from their defs.yaml, without Dagster)."""
        root = Path(self.project_root or Path(__file__).resolve().parents[2])
        return read_deployments(root, self.deployments_dir, lake_root=self.lake_root)

    @property
    def kafka(self) -> KafkaConfig:
        return KafkaSettings.model_validate(self.kafka_settings).as_config()

    @property
    def topics(self) -> Topics:
        return self.kafka.topics

    @property
    def store(self) -> JobStore:
        return JobStore(self.jobs_url, self.topics)

    @property
    def tenants(self) -> TenantDirectory:
        return load_tenants(Path(self.tenants_file), self.lake_root, self.environment)

    def relay(self) -> OutboxRelay:
        """Publishes the outbox to Kafka (a no-op while no broker is configured)."""
        kafka = self.kafka
        return OutboxRelay(self.store, lambda: KafkaPublisher(kafka))
