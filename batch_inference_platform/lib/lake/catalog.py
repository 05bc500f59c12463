"""The dataset catalog: one row per dataset version the platform produced, with its lineage.

It answers "which model and which data produced this score?": a prediction partition's row
names its Delta version, the validated and raw feature versions it was scored from, the model
version and the Dagster run. Entries are upserted on (dataset, partition, delta_version), so
recording the same version twice leaves one row.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import pyarrow as pa
from deltalake import write_deltalake

from batch_inference_platform.lib.lake.tables import DeltaLocation

CATALOG_SCHEMA = pa.schema(
    [
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("table_uri", pa.string(), nullable=False),
        pa.field("partition", pa.date32(), nullable=False),
        pa.field("delta_version", pa.int64(), nullable=False),
        pa.field("schema_hash", pa.string()),
        pa.field("rows", pa.int64()),
        pa.field("upstream_dataset", pa.string()),
        pa.field("upstream_delta_version", pa.int64()),
        pa.field("feature_table_version", pa.int64()),
        pa.field("model_name", pa.string()),
        pa.field("model_version", pa.int64()),
        pa.field("run_id", pa.string()),
        pa.field("recorded_at", pa.timestamp("us", tz="UTC")),
    ]
)


@dataclass(frozen=True)
class CatalogEntry:
    """One produced dataset version and what it was made from."""

    dataset: str
    table_uri: str
    partition: dt.date
    delta_version: int
    schema_hash: str
    rows: int
    upstream_dataset: str | None
    upstream_delta_version: int | None
    feature_table_version: int | None
    model_name: str | None
    model_version: int | None
    run_id: str
    recorded_at: dt.datetime


def record(location: DeltaLocation, entries: Sequence[CatalogEntry]) -> int:
    """Upsert ``entries`` in one transaction; returns the catalog's new Delta version."""
    batch = pa.Table.from_pylist([asdict(e) for e in entries], schema=CATALOG_SCHEMA)
    if not location.exists():
        write_deltalake(location.uri, batch, storage_options=location.options)
        return location.open().version()
    (
        location.open()
        .merge(
            batch,
            predicate="t.dataset = s.dataset AND t.partition = s.partition "
            "AND t.delta_version = s.delta_version",
            source_alias="s",
            target_alias="t",
        )
        .when_matched_update_all()
        .when_not_matched_insert_all()
        .execute()
    )
    return location.open().version()
