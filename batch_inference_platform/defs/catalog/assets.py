"""Catalog entries: every dataset version a partition run produced, with its lineage."""

import datetime as dt
from typing import Any

import dagster as dg

from batch_inference_platform.defs.inference.assets import PREDICTIONS_KEY
from batch_inference_platform.defs.partitions import DAILY_PARTITIONS, partition_day
from batch_inference_platform.defs.resources import LakeResource
from batch_inference_platform.defs.validation.assets import VALIDATED_KEY
from batch_inference_platform.lib.lake.catalog import CatalogEntry, record
from batch_inference_platform.lib.lake.tables import DeltaLocation, schema_hash, table_schema

CATALOG_KEY = dg.AssetKey("catalog_entries")
LINEAGE_CHECK = "lineage_complete"


@dg.asset(
    key=CATALOG_KEY,
    deps=[PREDICTIONS_KEY, VALIDATED_KEY],
    partitions_def=DAILY_PARTITIONS,
    group_name="catalog",
    kinds={"deltalake"},
    description="One catalog row per dataset version produced for the partition (validated "
    "features, quarantine, predictions): Delta version, schema hash, rows, the upstream "
    "versions and model version it came from, and the run that made it.",
    check_specs=[dg.AssetCheckSpec(LINEAGE_CHECK, asset=CATALOG_KEY)],
)
def catalog_entries(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    day = partition_day(context)
    layout = lake.layout
    validated = _latest(context, VALIDATED_KEY)
    scored = _latest(context, PREDICTIONS_KEY)
    missing = [
        k.to_user_string()
        for k, m in ((VALIDATED_KEY, validated), (PREDICTIONS_KEY, scored))
        if m is None
    ]
    if missing:
        raise dg.Failure(f"no materialization of {', '.join(missing)} for partition {day}")
    assert validated is not None and scored is not None
    now = dt.datetime.now(dt.UTC)
    feature_version = _int(validated, "feature_table_version")
    validated_version = _int(scored, "validated_version")
    entries = [
        _entry(
            "validated_features",
            layout.validated,
            day,
            validated,
            "feature_tables",
            feature_version,
            feature_version,
            None,
            None,
            now,
        ),
        _entry(
            "predictions",
            DeltaLocation(_text(scored, "table_uri"), layout.storage_options),
            day,
            scored,
            "validated_features",
            validated_version,
            feature_version,
            _text(scored, "model_name"),
            _int(scored, "model_version"),
            now,
        ),
    ]
    if validated.get("quarantine_delta_version") is not None:
        entries.append(
            _entry(
                "quarantine",
                layout.quarantine,
                day,
                {
                    **validated,
                    "delta_version": validated["quarantine_delta_version"],
                    "dagster/row_count": validated["rows_quarantined"],
                },
                "feature_tables",
                feature_version,
                feature_version,
                None,
                None,
                now,
            )
        )
    version = record(layout.catalog, entries)
    incomplete = [
        e.dataset
        for e in entries
        if e.upstream_delta_version is None
        or (e.dataset == "predictions" and e.model_version is None)
    ]
    return dg.MaterializeResult(
        metadata={
            "entries": len(entries),
            "delta_version": version,
            "table_uri": dg.MetadataValue.path(layout.catalog.uri),
            "predictions_version": int(scored["delta_version"]),
            "model_version": int(scored["model_version"]),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=LINEAGE_CHECK,
                passed=not incomplete,
                description="Every entry names its upstream version and model."
                if not incomplete
                else f"missing lineage for {', '.join(incomplete)}",
            )
        ],
    )


def _latest(context: dg.AssetExecutionContext, key: dg.AssetKey) -> dict[str, Any] | None:
    """Metadata values of the newest materialization of ``key`` for this run's partition."""
    result = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[context.partition_key]), limit=1
    )
    if not result.records:
        return None
    materialization = result.records[0].asset_materialization
    if materialization is None:
        return None
    values = {k: v.value for k, v in materialization.metadata.items()}
    values["_run_id"] = result.records[0].run_id
    return values


def _int(metadata: dict[str, Any] | None, key: str) -> int | None:
    value = (metadata or {}).get(key)
    return int(value) if value is not None else None


def _text(metadata: dict[str, Any], key: str) -> str:
    return str(metadata[key])


def _entry(
    dataset: str,
    location: DeltaLocation,
    day: dt.date,
    metadata: dict[str, Any],
    upstream: str,
    upstream_version: int | None,
    feature_version: int | None,
    model_name: str | None,
    model_version: int | None,
    now: dt.datetime,
) -> CatalogEntry:
    return CatalogEntry(
        dataset=dataset,
        table_uri=location.uri,
        partition=day,
        delta_version=int(metadata["delta_version"]),
        schema_hash=schema_hash(table_schema(location)),
        rows=int(metadata.get("dagster/row_count", 0)),
        upstream_dataset=upstream,
        upstream_delta_version=upstream_version,
        feature_table_version=feature_version,
        model_name=model_name,
        model_version=model_version,
        run_id=str(metadata["_run_id"]),
        recorded_at=now,
    )
