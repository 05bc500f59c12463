"""Catalog entries: every dataset version a partition run produced, with its lineage."""

import dataclasses
import datetime as dt
from collections.abc import Iterator
from typing import Any

import dagster as dg

from batch_inference_platform.defs import display
from batch_inference_platform.defs.partitions import Verdict, check_spec, per_partition_results
from batch_inference_platform.defs.resources import LakeResource
from batch_inference_platform.defs.scope import DeploymentScope
from batch_inference_platform.lib.lake.catalog import CATALOG_SCHEMA, CatalogEntry, record
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
        check_specs=[
            check_spec(
                LINEAGE_CHECK,
                scope.catalog,
                "The partition's validated features and predictions are catalogued, each naming "
                "the upstream version it came from (and the predictions their model version).",
                scope.partitions_def,
            )
        ],
    )
    def catalog_entries(
        context: dg.AssetExecutionContext, lake: LakeResource
    ) -> Iterator[dg.MaterializeResult | dg.Output | dg.AssetCheckEvaluation]:
        layout = lake.layout
        tables = layout.deployment(deployment)
        now = dt.datetime.now(dt.UTC)
        found = {key: _entries(tables, key, now) for key in scope.partition_keys(context)}
        entries = [entry for rows in found.values() for entry in rows]
        version = record(layout.catalog, entries) if entries else None
        metadata: dict[str, Any] = display.table(layout.catalog.uri, CATALOG_SCHEMA)
        if version is not None:
            metadata["delta_version"] = display.identifier(version)
        yield from per_partition_results(
            context,
            metadata=metadata,
            partitions={
                key: {
                    "dagster/row_count": len(rows),
                    "entries": display.entries_table(
                        [dataclasses.asdict(e) for e in rows], SHOWN_COLUMNS
                    ),
                }
                for key, rows in found.items()
            },
            verdicts={LINEAGE_CHECK: {key: _lineage(key, rows) for key, rows in found.items()}},
        )

    return catalog_entries


SHOWN_COLUMNS = (
    "dataset",
    "delta_version",
    "rows",
    "upstream_dataset",
    "upstream_delta_version",
    "model_name",
    "model_version",
    "schema_hash",
    "run_id",
    "table_uri",
)
"""The catalog columns the UI's table of a partition's entries shows."""


def _lineage(key: str, entries: list[CatalogEntry]) -> Verdict:
    """Whether ``key``'s entries are complete: validated features and predictions recorded,
    each naming its upstream version (and the predictions their model version)."""
    missing = {"validated_features", "predictions"} - {e.dataset for e in entries}
    incomplete = [
        e.dataset
        for e in entries
        if e.upstream_delta_version is None
        or (e.dataset == "predictions" and e.model_version is None)
    ]
    problems = [f"no {m} commit" for m in sorted(missing)] + [
        f"{d} lacks upstream or model version" for d in incomplete
    ]
    return Verdict(
        not problems,
        f"{key}: " + ("; ".join(problems) or "every entry names its upstream version and model."),
        {"entries": len(entries), "problems": len(problems)},
    )


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
