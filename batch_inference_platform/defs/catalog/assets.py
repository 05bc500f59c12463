"""Catalog entries: every dataset version a partition run produced, with its lineage."""

import datetime as dt

import dagster as dg

from batch_inference_platform.defs.inference.assets import PREDICTIONS_KEY
from batch_inference_platform.defs.partitions import (
    DAILY_PARTITIONS,
    SINGLE_RUN_BACKFILL,
    combine_checks,
    partition_days,
)
from batch_inference_platform.defs.resources import LakeResource, ModelRegistryResource
from batch_inference_platform.defs.validation.assets import VALIDATED_KEY
from batch_inference_platform.lib.lake.catalog import CatalogEntry, record
from batch_inference_platform.lib.lake.layout import LakeLayout
from batch_inference_platform.lib.lake.lineage import latest_commit
from batch_inference_platform.lib.lake.tables import DeltaLocation, schema_hash, table_schema

CATALOG_KEY = dg.AssetKey("catalog_entries")
LINEAGE_CHECK = "lineage_complete"


@dg.asset(
    key=CATALOG_KEY,
    deps=[PREDICTIONS_KEY, VALIDATED_KEY],
    partitions_def=DAILY_PARTITIONS,
    backfill_policy=SINGLE_RUN_BACKFILL,
    group_name="catalog",
    kinds={"deltalake"},
    description="One catalog row per dataset version produced for the partition (validated "
    "features, quarantine, predictions): Delta version, schema hash, rows, the upstream "
    "versions and model version it came from, and the run that made it - read from the "
    "lineage each write stamps on its Delta commit.",
    check_specs=[dg.AssetCheckSpec(LINEAGE_CHECK, asset=CATALOG_KEY)],
)
def catalog_entries(
    context: dg.AssetExecutionContext, lake: LakeResource, registry: ModelRegistryResource
) -> dg.MaterializeResult:
    layout = lake.layout
    now = dt.datetime.now(dt.UTC)
    entries: list[CatalogEntry] = []
    verdicts: dict[dt.date, tuple[bool, str]] = {}
    for day in partition_days(context):
        found = _entries(layout, registry.model_name, day, now)
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
        verdicts[day] = (
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


def _entries(
    layout: LakeLayout, model_name: str, day: dt.date, now: dt.datetime
) -> list[CatalogEntry]:
    """Catalog rows for the newest validated, quarantine and prediction commits of ``day``."""
    datasets = (
        ("validated_features", layout.validated, "feature_tables", "feature_table_version"),
        ("quarantine", layout.quarantine, "feature_tables", "feature_table_version"),
        ("predictions", layout.predictions(model_name), "validated_features", "validated_version"),
    )
    validated = latest_commit(layout.validated, day)
    feature_version = validated.number("feature_table_version") if validated else None
    entries = []
    for dataset, location, upstream, upstream_key in datasets:
        commit = latest_commit(location, day)
        if commit is None:
            continue
        entries.append(
            CatalogEntry(
                dataset=dataset,
                table_uri=location.uri,
                partition=day,
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
