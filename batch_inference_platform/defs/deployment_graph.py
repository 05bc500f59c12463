"""One deployment's Dagster objects: its asset group, jobs, schedule and promotion sensor."""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg
from dagster._core.definitions.external_asset import create_external_asset_from_source_asset

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
from batch_inference_platform.defs.scope import DeploymentScope, placed
from batch_inference_platform.defs.validation.assets import build_validated_features
from batch_inference_platform.lib.deployments.spec import Deployment
from batch_inference_platform.lib.lake.layout import LakeLayout


def build_deployment_defs(deployment: Deployment, settings: Settings) -> dg.Definitions:
    """The group ``<name>``: features -> validated -> model versions -> predictions -> catalog
    (and the archive), with the deployment's jobs, schedule and promotion sensor; every asset
    owned by the deployment's owners and of the kind ``azure`` when its tables are on ADLS."""
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
    return dg.Definitions(
        assets=placed_assets(
            assets, table_uris(scope, settings), deployment_owners(scope, settings)
        ),
        jobs=jobs.all,
        schedules=schedules,
        sensors=[sensor],
    )


def deployment_owners(scope: DeploymentScope, settings: Settings) -> tuple[str, ...]:
    """The deployment's ``owners`` of its defs.yaml, else ``batch-inference.owners``."""
    owners = scope.deployment.owners
    return owners if owners is not None else tuple(settings.application.owners)


def table_uris(scope: DeploymentScope, settings: Settings) -> dict[dg.AssetKey, list[str]]:
    """The tables each of the deployment's assets writes (or observes), by asset key."""
    lake = settings.application.lake
    layout = LakeLayout(lake.root, None, lake.archive_root)  # URIs only, no credentials
    tables = layout.deployment(scope.deployment)
    return {
        scope.features: [tables.features.uri],
        scope.validated: [tables.validated.uri, tables.quarantine.uri],
        scope.predictions: [tables.predictions.uri],
        scope.catalog: [layout.catalog.uri],
        scope.archive: [tables.archived_features.uri],
    }


def placed_assets(
    assets: Sequence[dg.AssetsDefinition | dg.SourceAsset],
    uris: dict[dg.AssetKey, list[str]],
    owners: Sequence[str],
) -> list[dg.AssetsDefinition]:
    """``assets`` with their owners and storage kinds (see ``scope.placed``); an observed
    source becomes the external asset Dagster would make of it, whose spec can carry owners."""
    defs = [
        create_external_asset_from_source_asset(a) if isinstance(a, dg.SourceAsset) else a
        for a in assets
    ]
    return [a.map_asset_specs(lambda s: placed(s, uris.get(s.key, []), owners)) for a in defs]


def engine_resource_key(deployment: Deployment) -> str:
    """The resource that scores the deployment: the platform's ``engine`` unless it names one."""
    return f"engine_{deployment.engine}" if deployment.engine else "engine"
