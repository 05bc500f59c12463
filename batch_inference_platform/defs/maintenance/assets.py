"""``lake_maintenance``: compacts and VACUUMs every Delta table the platform writes, on
``maintenance.schedule``, deleting files no version needs - replaced partitions' old files
and the files killed or conflicting writers left behind - once older than
``maintenance.vacuum-retention`` (``lib/lake/maintenance.py``).

The tables: every deployment's (``LakeLayout.deployment``: validated, quarantine,
predictions, archived features, and the source table where the platform generates it - a
demo source, locally), the platform's (catalog, real-time tables), every table the catalog
has recorded (e.g. predictions written elsewhere before), and the tenants' output tables
(from the records of their latest materializations). A table that does not exist is skipped.
One table's failure does not stop the others; the asset then fails naming it, with the
figures of all tables attached.

``build_lake_maintenance(deployments)`` makes the asset for the deployments of the
definitions being built.
"""

from collections.abc import Sequence

import dagster as dg

from batch_inference_platform.defs.inference.client_jobs import OUTPUT_ASSET_PREFIX
from batch_inference_platform.defs.metadata import TenantOutputMetadata
from batch_inference_platform.defs.resources import LakeResource, MaintenanceResource
from batch_inference_platform.defs.scope import PLATFORM_GROUP
from batch_inference_platform.lib.deployments.spec import Deployment
from batch_inference_platform.lib.lake.maintenance import (
    TableMaintenance,
    catalog_table_uris,
    maintain,
)
from batch_inference_platform.lib.lake.tables import DeltaLocation

MAINTENANCE_KEY = dg.AssetKey("lake_maintenance")
SINGLETON_TAG = "bip/singleton"
"""The run queue runs one maintenance at a time (``lib/instance_yaml.py``)."""

TABLE_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("table", "string", description="Path under the lake root, or URI."),
        dg.TableColumn("status", "string", description="ok, absent (skipped) or failed."),
        dg.TableColumn("files_removed", "int", description="Files VACUUM deleted."),
        dg.TableColumn("bytes_removed", "int", description="Their bytes."),
        dg.TableColumn("files_compacted", "int", description="Small files rewritten."),
        dg.TableColumn("files_written", "int", description="Files compaction wrote."),
        dg.TableColumn("live_files", "int", description="Files of the current version."),
        dg.TableColumn("live_bytes", "int", description="Their bytes."),
        dg.TableColumn("version", "int", description="Delta version afterwards."),
        dg.TableColumn("seconds", "float"),
        dg.TableColumn("error", "string"),
    ]
)


def build_lake_maintenance(deployments: Sequence[Deployment]) -> dg.AssetsDefinition:
    """``lake_maintenance`` over the tables of ``deployments`` and the platform's."""
    names = ", ".join(d.name for d in deployments) or "none"

    @dg.asset(
        key=MAINTENANCE_KEY,
        group_name=PLATFORM_GROUP,
        kinds={"deltalake"},
        description="Compacts and vacuums every Delta table the platform writes (of the "
        f"deployments {names} and the platform's): files no version needs (replaced "
        "partitions, files of killed or conflicting writers) older than "
        "maintenance.vacuum-retention are deleted. Per table: files and bytes removed.",
    )
    def lake_maintenance(
        context: dg.AssetExecutionContext, lake: LakeResource, maintenance: MaintenanceResource
    ) -> dg.MaterializeResult:
        return _maintain(context, lake, maintenance, deployments)

    return lake_maintenance


def _maintain(
    context: dg.AssetExecutionContext,
    lake: LakeResource,
    maintenance: MaintenanceResource,
    deployments: Sequence[Deployment],
) -> dg.MaterializeResult:
    results = []
    layout = lake.layout
    # delta-rs compaction writes Parquet without page checksums: only the tables delta-rs
    # writes (real-time) are compacted; the others are written compacted, checksummed.
    compactable = {
        t.uri
        for t in (layout.realtime_events, layout.realtime_aggregates, layout.realtime_insights)
    }
    for name, location in platform_tables(
        context.instance, lake, deployments, include_features=maintenance.include_features
    ):
        result = maintain(
            name,
            location,
            retention_hours=maintenance.vacuum_retention_hours,
            compact=maintenance.compact and location.uri in compactable,
        )
        context.log.info(_summary(result))
        results.append(result)
    metadata = _metadata(results, maintenance.vacuum_retention_hours)
    failed = [r for r in results if r.status == "failed"]
    if failed:
        raise dg.Failure(
            description=f"maintenance failed for {len(failed)} of {len(results)} tables "
            "(the others were maintained): "
            + "; ".join(f"{r.name} ({r.uri}): {r.error}" for r in failed),
            metadata=metadata,
        )
    return dg.MaterializeResult(metadata=metadata)


def platform_tables(
    instance: dg.DagsterInstance,
    lake: LakeResource,
    deployments: Sequence[Deployment],
    *,
    include_features: bool,
) -> list[tuple[str, DeltaLocation]]:
    """(name, location) of every table the platform writes, each once (by URI): each
    deployment's (its source only if generated and ``include_features``), the platform's,
    then those the catalog and the tenants' materializations record."""
    layout = lake.layout
    tables: list[DeltaLocation] = []
    owned = [layout.deployment(deployment) for deployment in deployments]
    for deployment, own in zip(deployments, owned, strict=True):
        if include_features and deployment.generator is not None:
            tables.append(own.features)
        tables += [own.validated, own.quarantine, own.predictions]
    tables += [
        layout.catalog,
        layout.realtime_events,
        layout.realtime_aggregates,
        layout.realtime_insights,
        *(own.archived_features for own in owned),
    ]
    unique: dict[str, DeltaLocation] = {}
    for location in tables:
        unique.setdefault(location.uri.rstrip("/"), location)
    recorded = catalog_table_uris(layout.catalog) | _tenant_tables(instance)
    extra = sorted(uri.rstrip("/") for uri in recorded if uri.rstrip("/") not in unique)
    located = [*unique.values(), *(DeltaLocation(uri, layout.storage_options) for uri in extra)]
    root = lake.root.rstrip("/") + "/"
    return [(location.uri.removeprefix(root), location) for location in located]


def _tenant_tables(instance: dg.DagsterInstance) -> set[str]:
    """The output tables of client requests: the table of each tenant output asset's latest
    materialization (its ``TenantOutputMetadata`` record)."""
    keys = [
        key
        for key in instance.get_asset_keys(prefix=[OUTPUT_ASSET_PREFIX])
        if key.path[0] == OUTPUT_ASSET_PREFIX
    ]
    uris = set()
    for key in keys:
        event = instance.get_latest_materialization_event(key)
        materialization = event.asset_materialization if event else None
        record = (
            TenantOutputMetadata.from_materialization(materialization) if materialization else None
        )
        if record is not None and record.table_uri:
            uris.add(record.table_uri)
    return uris


def _summary(result: TableMaintenance) -> str:
    if result.status == "absent":
        return f"{result.name}: no table, skipped"
    if result.status == "failed":
        return f"{result.name}: FAILED: {result.error}"
    return (
        f"{result.name}: {result.files_removed} files ({result.bytes_removed:,} bytes) "
        f"removed, {result.files_compacted} compacted into {result.files_written}; "
        f"{result.live_files} live files ({result.live_bytes:,} bytes), "
        f"version {result.version}"
    )


def _metadata(results: list[TableMaintenance], retention_hours: int) -> dict:
    records = [
        dg.TableRecord(
            {
                "table": r.name,
                "status": r.status,
                "files_removed": r.files_removed,
                "bytes_removed": r.bytes_removed,
                "files_compacted": r.files_compacted,
                "files_written": r.files_written,
                "live_files": r.live_files,
                "live_bytes": r.live_bytes,
                "version": r.version if r.version is not None else -1,
                "seconds": round(r.seconds, 3),
                "error": r.error,
            }
        )
        for r in results
    ]
    done = [r for r in results if r.status == "ok"]
    return {
        "tables": dg.MetadataValue.table(records, schema=TABLE_SCHEMA),
        "files_removed": sum(r.files_removed for r in done),
        "bytes_removed": sum(r.bytes_removed for r in done),
        "files_compacted": sum(r.files_compacted for r in done),
        "live_bytes": sum(r.live_bytes for r in done),
        "tables_maintained": len(done),
        "tables_absent": sum(r.status == "absent" for r in results),
        "tables_failed": [r.name for r in results if r.status == "failed"],
        "vacuum_retention_hours": retention_hours,
    }


lake_maintenance_job = dg.define_asset_job(
    "lake_maintenance_job",
    selection=dg.AssetSelection.assets(MAINTENANCE_KEY),
    tags={SINGLETON_TAG: "lake_maintenance"},
    description="Compact and vacuum every platform table.",
)


def build_maintenance_schedule(cron: str) -> dg.ScheduleDefinition:
    """``lake_maintenance_job`` on ``cron`` (``maintenance.schedule``, converted from Quartz)."""
    return dg.ScheduleDefinition(
        name="lake_maintenance_schedule",
        cron_schedule=cron,
        job=lake_maintenance_job,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Compacts and vacuums every platform table (maintenance.schedule).",
    )
