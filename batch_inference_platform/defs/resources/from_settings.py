"""The one place settings (application.yml, monitoring.yml) become resources:
``build_resources(settings)``, under the same keys in every environment (the package
docstring lists them), one function per resource."""

import os

import dagster as dg

from batch_inference_platform.config import Settings, SettingsError
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


def build_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    """Resources under the same keys in every environment, configured from settings."""
    return {
        "lake": lake(settings),
        "registry": registry(settings),
        "inbox": inbox(settings),
        "policy": policy(settings),
        **engines(settings),
        "telemetry": telemetry(settings),
        "alerts": alerts(settings),
        "sla_targets": sla_targets(settings),
        "realtime": realtime(settings),
        "maintenance": maintenance(settings),
        "client_requests": client_requests(settings),
    }


def lake(settings: Settings) -> LakeResource:
    cfg = settings.application.lake
    return LakeResource(
        root=cfg.root,
        storage_options=dict(cfg.storage_options),
        azure_auth=cfg.azure_auth,
        archive_root=cfg.archive_root,
        archive_retention_days=cfg.archive_retention.total_seconds() / 86400,
    )


def registry(settings: Settings) -> ModelRegistryResource:
    app = settings.application
    return ModelRegistryResource(
        tracking_uri=app.mlflow.tracking_uri,
        registry_uri=app.mlflow.registry_uri,
        artifact_root=app.mlflow.artifact_root,
        experiment=app.mlflow.experiment,
        model_cache_dir=str(settings.model_cache_dir),
        max_load_seconds=app.model.max_load_seconds,
        ui_url=app.mlflow.ui_url,
    )


def inbox(settings: Settings) -> InboxResource:
    return InboxResource(url=settings.application.api.inbox_url)


def policy(settings: Settings) -> QualityPolicyResource:
    app = settings.application
    return QualityPolicyResource(
        min_rows=app.validation.min_rows,
        max_null_rate=app.validation.max_null_rate,
        max_quarantine_rate=app.validation.max_quarantine_rate,
        max_duplicate_rate=app.validation.max_duplicate_rate,
        psi_threshold=app.drift.psi_threshold,
        drift_bins=app.drift.bins,
    )


def engines(settings: Settings) -> dict[str, ScoringEngineResource]:
    """``engine`` (the one ``batch-inference.engine`` names, for deployments that name none)
    and ``engine_<name>`` for each engine a deployment may name (databricks once configured)."""
    app = settings.application
    found: dict[str, ScoringEngineResource] = {
        "engine_local": LocalEngineResource(),
        "engine_spark": SparkEngineResource(connect_url=app.spark.connect_url),
    }
    if app.databricks.host or app.engine == "databricks":
        found["engine_databricks"] = databricks_engine(settings)
    return {"engine": found[f"engine_{app.engine}"], **found}


def databricks_engine(settings: Settings) -> DatabricksEngineResource:
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
        alerts=alerts(settings),
    )


def telemetry(settings: Settings) -> TelemetryResource:
    metrics = settings.monitoring.metrics
    return TelemetryResource(
        collection_interval_seconds=metrics.collection_interval.total_seconds(),
        local_dir=str(settings.data_dir / "telemetry"),
    )


def alerts(settings: Settings) -> AlertsResource:
    """The alerting ``alerts`` in monitoring.yml describes."""
    cfg = settings.monitoring.alerts
    slack, email, webhook = cfg.channels.slack, cfg.channels.email, cfg.channels.webhook
    return AlertsResource(
        dagster_url=cfg.dagster_url,
        threshold=cfg.job_failure.threshold,
        notification=list(cfg.job_failure.notification),
        slack_webhook_url_env=slack.webhook_url_env,
        smtp_host=email.smtp_host,
        smtp_port=email.smtp_port,
        smtp_starttls=email.starttls,
        email_sender=email.sender,
        email_recipients=list(email.recipients),
        smtp_username_env=email.username_env,
        smtp_password_env=email.password_env,
        webhook_url_env=webhook.url_env,
        webhook_secret_env=webhook.secret_env,
    )


def sla_targets(settings: Settings) -> SlaTargetsResource:
    """The targets ``performance.sla-targets`` in monitoring.yml sets (over the default
    window, counting the default jobs)."""
    targets = settings.monitoring.performance.sla_targets
    return SlaTargetsResource(
        job_completion_quantile=targets.job_completion.quantile,
        job_completion_within_seconds=targets.job_completion.within.total_seconds(),
        data_throughput_per_hour=targets.data_throughput,
        error_rate=targets.error_rate,
    )


def realtime(settings: Settings) -> RealtimeResource:
    app = settings.application
    return RealtimeResource(
        realtime_settings=app.realtime.model_dump(mode="json"),
        kafka_settings=app.kafka.model_dump(),
    )


def maintenance(settings: Settings) -> MaintenanceResource:
    """Retention from ``batch-inference.maintenance``; demo source tables only locally."""
    app = settings.application
    return MaintenanceResource(
        vacuum_retention_hours=app.maintenance.retention_hours,
        include_features=app.environment == "local",
    )


def client_requests(settings: Settings) -> ClientRequestsResource:
    app = settings.application
    return ClientRequestsResource(
        jobs_url=app.api.jobs_url,
        tenants_file=app.api.tenants_file,
        lake_root=app.lake.root,
        environment=app.environment,
        kafka_settings=app.kafka.model_dump(),
        project_root=str(settings.project_root),
        deployments_dir=app.deployments_dir,
    )
