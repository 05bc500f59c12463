"""The Dagster code location: every deployment under ``defs/deployments/`` (a ScoringDeployment
component each) plus what all of them share, built from settings (the resources by
``defs/resources/from_settings.py``)."""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import dagster as dg
from pydantic.warnings import PydanticDeprecatedSince20

from batch_inference_platform.config import Settings, SettingsError, load_settings
from batch_inference_platform.defs.building import building_with
from batch_inference_platform.defs.deployment_checks import check_realtime, check_together
from batch_inference_platform.defs.deployment_graph import placed_assets
from batch_inference_platform.defs.inference.client_jobs import client_inference_job
from batch_inference_platform.defs.inference.request_sensor import client_request_sensor
from batch_inference_platform.defs.maintenance.assets import (
    MAINTENANCE_KEY,
    build_lake_maintenance,
    build_maintenance_schedule,
    lake_maintenance_job,
)
from batch_inference_platform.defs.monitoring.alerts import job_failure_alerts
from batch_inference_platform.defs.monitoring.job_status import JOB_STATUS_SENSORS
from batch_inference_platform.defs.monitoring.run_metrics import (
    run_metrics_on_failure,
    run_metrics_on_success,
)
from batch_inference_platform.defs.monitoring.sla import (
    sla_report,
    sla_report_job,
    sla_report_schedule,
)
from batch_inference_platform.defs.realtime.assets import (
    INSIGHTS_KEY,
    WINDOWS_KEY_ASSET,
    build_customer_insights,
    build_realtime_schedule,
    customer_activity_windows,
    realtime_job,
)
from batch_inference_platform.defs.resources.from_settings import build_resources
from batch_inference_platform.lib.deployments.folder import read_deployments
from batch_inference_platform.lib.deployments.spec import Deployment
from batch_inference_platform.lib.lake.layout import LakeLayout

DEPLOYMENTS_MODULE = "batch_inference_platform.defs.deployments"

_DAGSTER = r"dagster(_shared)?(\.|$)"
LOAD_NOISE: tuple[tuple[type[Warning], str, str], ...] = (
    # Dagster's component loader and definitions machinery, on its own beta/preview APIs.
    (dg.BetaWarning, r"Class `(LocalFileCodeReference|CodeReferencesMetadataValue)` ", _DAGSTER),
    (dg.BetaWarning, r"Parameter `owners` of initializer `SensorDefinition.__init__` ", _DAGSTER),
    (dg.PreviewWarning, r"Class `SparkDeclarativePipelineScaffolder` ", _DAGSTER),
    (dg.PreviewWarning, r"Function `load_definitions_from_modules?` ", _DAGSTER),
    (
        PydanticDeprecatedSince20,
        r"`parse_obj_as` is deprecated|The `__fields__` attribute",
        _DAGSTER,
    ),
    # MLflow's tracking store on SQLAlchemy 2 (imported while the load checks models).
    (DeprecationWarning, r"The ``noload`` loader strategy is deprecated", r"mlflow(\.|$)"),
    # Dagster features the platform relies on by design: single-run backfills and partitioned
    # checks (one verdict per partition) - nothing a user of the platform can change.
    (dg.BetaWarning, r"Parameter `backfill_policy` of function `asset` ", _DAGSTER),
    (
        dg.PreviewWarning,
        r"Specifying a partitions_def on an AssetCheckSpec ",
        r"(dagster|batch_inference_platform)(\.|$)",
    ),
)
"""(category, message, module) of the warnings a definitions load would print that only
Dagster or a library could act on; anything else (our code, a user's YAML) still shows."""


@contextmanager
def quiet_dagster_internals() -> Iterator[None]:
    """Within: ``LOAD_NOISE`` is not shown; the previous warning filters return after."""
    with warnings.catch_warnings():
        for category, message, module in LOAD_NOISE:
            warnings.filterwarnings("ignore", message, category, module)
        yield


def build_definitions(settings: Settings) -> dg.Definitions:
    """The code location for ``settings``: each deployment's group (generated features and a
    demo model locally, observed Delta tables elsewhere) and the platform around them."""
    with quiet_dagster_internals():
        defs = _build(settings)
        defs.get_repository_def()  # resolved (and cached) here: its warnings are load noise too
    return defs


def _build(settings: Settings) -> dg.Definitions:
    with building_with(settings):
        deployments = load_deployments(settings)
    app = settings.application
    declared = read_deployments(settings.project_root, app.deployments_dir, lake_root=app.lake.root)
    try:
        tables = LakeLayout(app.lake.root, None, app.lake.archive_root)  # URIs, no credentials
        check_together(list(declared.values()), tables)
    except ValueError as error:
        raise SettingsError(f"{app.deployments_dir or DEPLOYMENTS_MODULE}: {error}") from None
    insights = realtime_deployment(settings, declared)
    platform_assets = [
        customer_activity_windows,
        *([build_customer_insights(insights)] if insights else []),
        sla_report,
        build_lake_maintenance(list(declared.values())),
    ]
    platform = dg.Definitions(
        assets=placed_assets(
            platform_assets, platform_table_uris(settings, declared), settings.application.owners
        ),
        jobs=[client_inference_job, realtime_job, sla_report_job, lake_maintenance_job],
        schedules=[
            build_realtime_schedule(settings.application.realtime.cron),
            sla_report_schedule,
            build_maintenance_schedule(settings.application.maintenance.cron),
        ],
        sensors=[
            *kafka_sensors(settings),
            run_metrics_on_success,
            run_metrics_on_failure,
            job_failure_alerts,
        ],
        resources=build_resources(settings),
        # Steps run one after another in the run's own process: a launched run imports the
        # platform once, not once per step (the deployments' jobs set the same executor).
        executor=dg.in_process_executor,
    )
    return dg.Definitions.merge(deployments, platform)


def platform_table_uris(
    settings: Settings, declared: dict[str, Deployment]
) -> dict[dg.AssetKey, list[str]]:
    """The tables each platform asset writes: the real-time tables, and for lake maintenance
    every deployment's and the platform's."""
    lake = settings.application.lake
    layout = LakeLayout(lake.root, None, lake.archive_root)  # URIs only, no credentials
    realtime = [layout.realtime_events.uri, layout.realtime_aggregates.uri]
    owned = [layout.deployment(d) for d in declared.values()]
    return {
        WINDOWS_KEY_ASSET: realtime,
        INSIGHTS_KEY: [layout.realtime_insights.uri],
        MAINTENANCE_KEY: [
            *realtime,
            layout.realtime_insights.uri,
            layout.catalog.uri,
            *(t.uri for own in owned for t in (own.validated, own.predictions)),
            *(own.archived_features.uri for own in owned),
        ],
    }


def kafka_sensors(settings: Settings) -> list[dg.SensorDefinition]:
    """The client-request and job-status sensors, only while Kafka is configured.

    The request sensor launches runs from ``batch-inference-input`` alone (the job store only
    vouches for a message); jobs the API accepts without a broker wait in its outbox, which
    only the relay publishes once ``kafka.bootstrap-servers`` is set - and that reloads the
    code location with the sensor. The status sensors follow runs of ``client_inference_job``,
    which only the request sensor launches with a job id.
    """
    if not settings.application.kafka.bootstrap_servers:
        return []
    return [client_request_sensor, *JOB_STATUS_SENSORS]


def realtime_deployment(settings: Settings, declared: dict[str, Deployment]) -> Deployment | None:
    """The deployment ``batch-inference.realtime.deployment`` names (None: no insights)."""
    name = settings.application.realtime.deployment
    if not name:
        return None
    if name not in declared:
        raise SettingsError(
            f"application.yml: batch-inference.realtime.deployment: no deployment {name!r} "
            f"(declared: {', '.join(sorted(declared)) or 'none'})"
        )
    try:
        check_realtime(declared[name])
    except ValueError as error:
        raise SettingsError(f"application.yml: {error}") from None
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
