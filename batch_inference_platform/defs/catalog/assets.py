"""Catalog entries: every dataset version a partition run produced, with its lineage."""

import datetime as dt

import dagster as dg

from batch_inference_platform.defs.partitions import combine_checks
from batch_inference_platform.defs.resources import LakeResource
from batch_inference_platform.defs.scope import DeploymentScope
from batch_inference_platform.lib.lake.catalog import CatalogEntry, record
from batch_inference_platform.lib.lake.layout import DeploymentTables
from batch_inference_platform.lib.lake.lineage import latest_commit
from batch_inference_platform.lib.lake.tables import DeltaLocation, schema_hash, table_schema

LINEAGE_CHECK = "lineage_complete"


def build_catalog_entries(scope: DeploymentScope) -> dg.AssetsDefinition:
    """``<name>/catalog_entries``: the deployment's dataset versions, in the platform's one
    catalog table (every deployment records there, each row naming its deployment)."""
    deployment = scope.deployment

    @dg.asset(
        key=scope.catalog,
        deps=[scope.predictions, scope.validated],
        partitions_def=scope.partitions_def,
        backfill_policy=scope.backfill_policy,
        group_name=scope.group,
        kinds={"deltalake"},
        description=f"{deployment.name}: one catalog row per dataset version produced for the "
        "partition (validated features, quarantine, predictions): Delta version, schema hash, "
        "rows, the upstream versions and model version it came from, and the run that made it - "
        "read from the lineage each write stamps on its Delta commit.",
        check_specs=[dg.AssetCheckSpec(LINEAGE_CHECK, asset=scope.catalog)],
    )
    def catalog_entries(
        context: dg.AssetExecutionContext, lake: LakeResource
    ) -> dg.MaterializeResult:
        layout = lake.layout
        tables = layout.deployment(deployment)
        now = dt.datetime.now(dt.UTC)
        entries: list[CatalogEntry] = []
        verdicts: dict[str, tuple[bool, str]] = {}
        for key in scope.partition_keys(context):
            found = _entries(tables, key, now)
            entries += found
            missing = {"validated_features", "predictions"} - {e.dataset for e in found}
            incomplete = [
                e.dataset
                for e in found
                if e.upstream_delta_version is None
                or (e.dataset == "predictions" and e.model_version is None)
            ]
            problems = [f"no {m} commit" for m in sorted(missing)] + [
                f"{d} lacks upstream or model version" for d in incomplete
            ]
            verdicts[key] = (
                not problems,
                "; ".join(problems) or "Every entry names its upstream version and model.",
            )
        metadata: dict[str, dg.MetadataValue] = {
            "entries": dg.MetadataValue.int(len(entries)),
            "table_uri": dg.MetadataValue.path(layout.catalog.uri),
        }
        if entries:
            metadata["delta_version"] = dg.MetadataValue.int(record(layout.catalog, entries))
        return dg.MaterializeResult(
            metadata=metadata,
            check_results=[combine_checks(LINEAGE_CHECK, verdicts)],
        )

    return catalog_entries


def _entries(tables: DeploymentTables, key: str, now: dt.datetime) -> list[CatalogEntry]:
    """Catalog rows for the newest validated, quarantine and prediction commits of ``key``."""
    datasets = (
        ("validated_features", tables.validated, "feature_tables", "feature_table_version"),
        ("quarantine", tables.quarantine, "feature_tables", "feature_table_version"),
        ("predictions", tables.predictions, "validated_features", "validated_version"),
    )
    validated = latest_commit(tables.validated, key)
    feature_version = validated.number("feature_table_version") if validated else None
    entries = []
    for dataset, location, upstream, upstream_key in datasets:
        commit = latest_commit(location, key)
        if commit is None:
            continue
        entries.append(
            CatalogEntry(
                deployment=tables.name,
                dataset=dataset,
                table_uri=location.uri,
                partition=key,
                delta_version=commit.version,
                schema_hash=_schema_hash(location),
                rows=commit.rows,
                upstream_dataset=upstream,
                upstream_delta_version=commit.number(upstream_key),
                feature_table_version=_first(
                    commit.number("feature_table_version"), feature_version
                ),
                model_name=commit.info.get("model_name"),
                model_version=commit.number("model_version"),
                run_id=commit.run_id,
                recorded_at=now,
            )
        )
    return entries


def _first(*values: int | None) -> int | None:
    return next((v for v in values if v is not None), None)


def _schema_hash(location: DeltaLocation) -> str:
    return schema_hash(table_schema(location))
