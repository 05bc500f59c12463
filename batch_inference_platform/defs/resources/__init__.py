"""Every resource of the code location, one module each; ``from_settings.build_resources``
maps the settings onto them, under the same keys in every environment:

- ``lake``: ``LakeResource`` (lake.py), the Delta lake.
- ``registry``: ``ModelRegistryResource`` (registry.py), MLflow tracking and model registry.
- ``policy``: ``QualityPolicyResource`` (quality.py), validation limits and drift alarm level.
- ``inbox``: ``InboxResource`` (inbox.py), the webhook inbox.
- ``client_requests``: ``ClientRequestsResource`` (client_requests.py), tenants, job store
  and Kafka for client requests.
- ``engine`` and ``engine_local``, ``engine_spark``, ``engine_databricks``:
  ``ScoringEngineResource`` - ``LocalEngineResource``, ``SparkEngineResource`` (engines.py),
  ``DatabricksEngineResource`` (databricks.py).
- ``realtime``: ``RealtimeResource`` (realtime.py), Kafka and Redis of the real-time assets.
- ``telemetry``: ``TelemetryResource`` (telemetry.py), run metrics and traces.
- ``alerts``: ``AlertsResource`` (alerts.py), failure alert channels.
- ``sla_targets``: ``SlaTargetsResource`` (sla_targets.py), the SLA report's targets.
- ``maintenance``: ``MaintenanceResource`` (maintenance.py), Delta table maintenance.
"""

from batch_inference_platform.defs.resources.alerts import AlertsResource
from batch_inference_platform.defs.resources.client_requests import ClientRequestsResource
from batch_inference_platform.defs.resources.databricks import DatabricksEngineResource
from batch_inference_platform.defs.resources.engines import (
    LocalEngineResource,
    ScoringEngineResource,
    SparkEngineResource,
)
from batch_inference_platform.defs.resources.inbox import InboxResource
from batch_inference_platform.defs.resources.lake import LakeResource
from batch_inference_platform.defs.resources.maintenance import MaintenanceResource
from batch_inference_platform.defs.resources.quality import QualityPolicyResource
from batch_inference_platform.defs.resources.realtime import RealtimeResource
from batch_inference_platform.defs.resources.registry import ModelRegistryResource
from batch_inference_platform.defs.resources.sla_targets import SlaTargetsResource
from batch_inference_platform.defs.resources.telemetry import TelemetryResource

__all__ = [
    "AlertsResource",
    "ClientRequestsResource",
    "DatabricksEngineResource",
    "InboxResource",
    "LakeResource",
    "LocalEngineResource",
    "MaintenanceResource",
    "ModelRegistryResource",
    "QualityPolicyResource",
    "RealtimeResource",
    "ScoringEngineResource",
    "SlaTargetsResource",
    "SparkEngineResource",
    "TelemetryResource",
]
