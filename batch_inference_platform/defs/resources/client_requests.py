"""``client_requests``: what serves client requests - the tenants, the deployments they name,
the job store (with its outbox) and Kafka."""

from pathlib import Path
from typing import Any

import dagster as dg

from batch_inference_platform.config import KafkaSettings
from batch_inference_platform.lib.deployments.folder import read_deployments
from batch_inference_platform.lib.deployments.spec import Deployment
from batch_inference_platform.lib.inbox.job_store import JobStore
from batch_inference_platform.lib.inbox.relay import OutboxRelay
from batch_inference_platform.lib.messaging.kafka import KafkaPublisher
from batch_inference_platform.lib.messaging.settings import KafkaConfig
from batch_inference_platform.lib.messaging.topics import Topics
from batch_inference_platform.lib.tenants import TenantDirectory, load_tenants

CLIENT_JOB = "client_inference_job"
"""The job a client request runs as (``defs/inference/client_jobs.py``)."""


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
        root = Path(self.project_root or Path(__file__).resolve().parents[3])
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
