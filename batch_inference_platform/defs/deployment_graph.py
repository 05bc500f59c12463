"""One deployment's Dagster objects: its asset group, jobs, schedule and promotion sensor."""

from __future__ import annotations

import dagster as dg

from batch_inference_platform.config import Settings
from batch_inference_platform.defs.catalog.assets import build_catalog_entries
from batch_inference_platform.defs.features.archive import build_archived_features
from batch_inference_platform.defs.features.assets import (
    build_generated_features,
    build_observed_features,
)
from batch_inference_platform.defs.inference.assets import build_predictions
from batch_inference_platform.defs.inference.schedules import build_jobs, build_scoring_schedule
from batch_inference_platform.defs.models.assets import build_demo_model, build_model_versions
from batch_inference_platform.defs.models.sensors import build_model_update_sensor
from batch_inference_platform.defs.scope import DeploymentScope
from batch_inference_platform.defs.validation.assets import build_validated_features
from batch_inference_platform.lib.deployments.spec import Deployment


def build_deployment_defs(deployment: Deployment, settings: Settings) -> dg.Definitions:
    """The group ``<name>``: features -> validated -> model versions -> predictions -> catalog
    (and the archive), with the deployment's jobs, schedule and promotion sensor."""
    scope = DeploymentScope(deployment)
    app = settings.application
    generated = deployment.generator is not None and app.environment == "local"
    assets: list[dg.AssetsDefinition | dg.SourceAsset] = [
        build_generated_features(scope) if generated else build_observed_features(scope),
        build_model_versions(scope, trained_locally=generated),
        build_predictions(scope, engine_key=engine_resource_key(deployment)),
        build_catalog_entries(scope),
    ]
    assets.append(build_validated_features(scope))
    if deployment.partitioning.partitioned:
        assets.append(build_archived_features(scope))
    if generated:
        assets.append(build_demo_model(scope))
    jobs = build_jobs(scope, generated=generated)
    schedules = (
        [build_scoring_schedule(scope, jobs.score, deployment.schedule)]
        if deployment.schedule
        else []
    )
    sensor = build_model_update_sensor(
        scope, jobs.rescore, deployment.rescore_partitions or app.model.rescore_partitions
    )
    return dg.Definitions(assets=assets, jobs=jobs.all, schedules=schedules, sensors=[sensor])


def engine_resource_key(deployment: Deployment) -> str:
    """The resource that scores the deployment: the platform's ``engine`` unless it names one."""
    return f"engine_{deployment.engine}" if deployment.engine else "engine"
