"""The Dagster code location: every deployment under ``defs/deployments/`` (a ScoringDeployment
component each) plus what all of them share, built from settings in one place."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from types import ModuleType

import dagster as dg

from batch_inference_platform.config import Settings, SettingsError, load_settings
from batch_inference_platform.defs.building import building_with
from batch_inference_platform.defs.inference.client_jobs import client_inference_job
from batch_inference_platform.defs.inference.databricks_engine import DatabricksEngineResource
from batch_inference_platform.defs.inference.engines import (
    LocalEngineResource,
    ScoringEngineResource,
    SparkEngineResource,
)
from batch_inference_platform.defs.inference.request_sensor import client_request_sensor
from batch_inference_platform.defs.maintenance.assets import (
    MaintenanceResource,
    build_lake_maintenance,
    build_maintenance_schedule,
    lake_maintenance_job,
)
from batch_inference_platform.defs.monitoring.alerts import AlertsResource, job_failure_alerts
from batch_inference_platform.defs.monitoring.job_status import JOB_STATUS_SENSORS
from batch_inference_platform.defs.monitoring.run_metrics import (
    TelemetryResource,
    run_metrics_on_failure,
    run_metrics_on_success,
)
from batch_inference_platform.defs.monitoring.sla import (
    SlaTargetsResource,
    sla_report,
    sla_report_job,
    sla_report_schedule,
)
from batch_inference_platform.defs.realtime.assets import (
    build_customer_insights,
    build_realtime_schedule,
    customer_activity_windows,
    realtime_job,
)
from batch_inference_platform.defs.realtime.resources import RealtimeResource
from batch_inference_platform.defs.resources import (
    ClientRequestsResource,
    InboxResource,
    LakeResource,
    ModelRegistryResource,
    QualityPolicyResource,
)
from batch_inference_platform.lib.deployments.folder import read_deployments
from batch_inference_platform.lib.deployments.spec import Deployment


def build_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    """Resources under the same keys in every environment, configured from settings."""
    app = settings.application
    return {
        "lake": LakeResource(
            root=app.lake.root,
            storage_options=dict(app.lake.storage_options),
            azure_auth=app.lake.azure_auth,
            archive_root=app.lake.archive_root,
            archive_retention_days=app.lake.archive_retention.total_seconds() / 86400,
        ),
        "registry": ModelRegistryResource(
            tracking_uri=app.mlflow.tracking_uri,
            registry_uri=app.mlflow.registry_uri,
            artifact_root=app.mlflow.artifact_root,
            experiment=app.mlflow.experiment,
            model_cache_dir=str(settings.model_cache_dir),
            max_load_seconds=app.model.max_load_seconds,
        ),
        "inbox": InboxResource(url=app.api.inbox_url),
        "policy": QualityPolicyResource(
            min_rows=app.validation.min_rows,
            max_null_rate=app.validation.max_null_rate,
            max_quarantine_rate=app.validation.max_quarantine_rate,
            max_duplicate_rate=app.validation.max_duplicate_rate,
            psi_threshold=app.drift.psi_threshold,
            drift_bins=app.drift.bins,
        ),
        **build_engines(settings),
        "telemetry": TelemetryResource(
            collection_interval_seconds=settings.monitoring.metrics.collection_interval.total_seconds(),
            local_dir=str(settings.data_dir / "telemetry"),
        ),
        "alerts": AlertsResource.from_settings(settings.monitoring),
        "sla_targets": SlaTargetsResource.from_settings(settings.monitoring),
        "realtime": RealtimeResource(
            realtime_settings=app.realtime.model_dump(mode="json"),
            kafka_settings=app.kafka.model_dump(),
        ),
        "maintenance": MaintenanceResource.from_settings(
            app.maintenance, include_features=app.environment == "local"
        ),
        "client_requests": ClientRequestsResource(
            jobs_url=app.api.jobs_url,
            tenants_file=app.api.tenants_file,
            lake_root=app.lake.root,
            environment=app.environment,
            kafka_settings=app.kafka.model_dump(),
            project_root=str(settings.project_root),
            deployments_dir=app.deployments_dir,
        ),
    }


def build_engines(settings: Settings) -> dict[str, ScoringEngineResource]:
    """``engine`` (the one ``batch-inference.engine`` names, for deployments that name none)
    and ``engine_<name>`` for each engine a deployment may name (databricks once configured)."""
    app = settings.application
    engines: dict[str, ScoringEngineResource] = {
        "engine_local": LocalEngineResource(),
        "engine_spark": SparkEngineResource(connect_url=app.spark.connect_url),
    }
    if app.databricks.host or app.engine == "databricks":
        engines["engine_databricks"] = build_databricks_engine(settings)
    return {"engine": engines[f"engine_{app.engine}"], **engines}


def build_databricks_engine(settings: Settings) -> DatabricksEngineResource:
    """Engine ``databricks`` from settings; the token only ever as an environment variable."""
    app = settings.application
    cfg, cluster = app.databricks, app.spark.cluster
    if not cfg.host:
        raise SettingsError(
            "application.yml: batch-inference.databricks.host: engine 'databricks' needs the "
            "workspace URL (or BIP__BATCH_INFERENCE__DATABRICKS__HOST)"
        )
    token = dg.EnvVar(cfg.token_env) if cfg.token_env and os.environ.get(cfg.token_env) else ""
    return DatabricksEngineResource(
        host=cfg.host,
        token=token,
        spark_version=cfg.spark_version,
        node_type=cluster.node_type,
        min_workers=cluster.min_workers,
        max_workers=cluster.max_workers,
        auto_scale=cluster.auto_scale,
        spark_conf=dict(cfg.spark_conf),
        artifacts_dir=cfg.artifacts_dir,
        log_dir=cfg.log_dir,
        wheel=cfg.wheel,
        cluster_model_cache_dir=cfg.cluster_model_cache_dir,
        target_minutes=cfg.target_minutes,
        poll_seconds=cfg.poll_seconds,
        alerts=AlertsResource.from_settings(settings.monitoring),
    )


DEPLOYMENTS_MODULE = "batch_inference_platform.defs.deployments"


def build_definitions(settings: Settings) -> dg.Definitions:
    """The code location for ``settings``: each deployment's group (generated features and a
    demo model locally, observed Delta tables elsewhere) and the platform around them."""
    with building_with(settings):
        deployments = load_deployments(settings)
    app = settings.application
    declared = read_deployments(settings.project_root, app.deployments_dir, lake_root=app.lake.root)
    platform = dg.Definitions(
        assets=[
            customer_activity_windows,
            build_customer_insights(realtime_deployment(settings, declared)),
            sla_report,
            build_lake_maintenance(list(declared.values())),
        ],
        jobs=[client_inference_job, realtime_job, sla_report_job, lake_maintenance_job],
        schedules=[
            build_realtime_schedule(settings.application.realtime.cron),
            sla_report_schedule,
            build_maintenance_schedule(settings.application.maintenance.cron),
        ],
        sensors=[
            client_request_sensor,
            *JOB_STATUS_SENSORS,
            run_metrics_on_success,
            run_metrics_on_failure,
            job_failure_alerts,
        ],
        resources=build_resources(settings),
    )
    return dg.Definitions.merge(deployments, platform)


def realtime_deployment(settings: Settings, declared: dict[str, Deployment]) -> Deployment:
    """The deployment ``batch-inference.realtime.deployment`` names."""
    name = settings.application.realtime.deployment
    if name not in declared:
        raise SettingsError(
            f"application.yml: batch-inference.realtime.deployment: no deployment {name!r} "
            f"(declared: {', '.join(sorted(declared)) or 'none'})"
        )
    return declared[name]


def load_deployments(settings: Settings) -> dg.Definitions:
    """Every ``<name>/defs.yaml`` of the deployments folder, loaded by Dagster's component
    loader (within ``building_with(settings)``): the package's ``defs/deployments`` unless
    ``batch-inference.deployments-dir`` names another folder."""
    project_root = Path(__file__).resolve().parent.parent
    folder = settings.application.deployments_dir
    module = importlib.import_module(DEPLOYMENTS_MODULE) if not folder else _folder_module(folder)
    return dg.ComponentTree.from_module(defs_module=module, project_root=project_root).build_defs()


def _folder_module(folder: str) -> ModuleType:
    """A deployments folder outside the package, as the module Dagster's loader walks (it holds
    YAML only, so nothing is imported from it)."""
    path = Path(folder)
    if not path.is_dir():
        raise SettingsError(f"application.yml: batch-inference.deployments-dir: no folder {path}")
    name = f"batch_inference_deployments_{abs(hash(str(path.resolve()))):x}"
    module = sys.modules.get(name)
    if module is None:
        module = ModuleType(name, "deployments folder (YAML only)")
        module.__file__ = str(path / "__init__.py")
        module.__path__ = [str(path)]
        sys.modules[name] = module
    return module


defs = build_definitions(load_settings())
