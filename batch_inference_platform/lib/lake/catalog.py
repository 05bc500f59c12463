"""The dataset catalog: one row per dataset version the platform produced, with its lineage.

It answers "which model and which data produced this score?": a prediction partition's row
names its Delta version, the validated and raw feature versions it was scored from, the model
version and the Dagster run. One catalog records every deployment; ``partition`` is the
partition's key (``2026-11-01``, ``2026-11-01-06:00``, ``all``). Entries are upserted on
(deployment, dataset, partition, delta_version), so recording the same version twice leaves
one row.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import pyarrow as pa

from batch_inference_platform.lib.deployments.partitioning import Partitioning, PartitionKind
from batch_inference_platform.lib.lake.errors import ConcurrentWriteError
from batch_inference_platform.lib.lake.tables import (
    DeltaLocation,
    rewrite_table,
    snapshot,
    table_schema,
)

ATTEMPTS = 5
UNPARTITIONED = Partitioning(PartitionKind.NONE)

CATALOG_SCHEMA = pa.schema(
    [
        pa.field("deployment", pa.string(), nullable=False),
        pa.field("dataset", pa.string(), nullable=False),
        pa.field("table_uri", pa.string(), nullable=False),
        pa.field("partition", pa.string(), nullable=False),
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

    deployment: str
    dataset: str
    table_uri: str
    partition: str
    """The partition's key."""
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
    """Upsert ``entries`` in one transaction; returns the Delta version of that commit."""
    _check_catalog_schema(location)
    batch = pa.Table.from_pylist([asdict(e) for e in entries], schema=CATALOG_SCHEMA)
    keys = {_key(e.deployment, e.dataset, e.partition, e.delta_version) for e in entries}
    for attempt in range(ATTEMPTS):
        kept = _rows_except(location, keys)
        try:
            return rewrite_table(location, [*kept, *batch.to_batches()], CATALOG_SCHEMA).version
        except ConcurrentWriteError:
            if attempt == ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def _check_catalog_schema(location: DeltaLocation) -> None:
    """Refuse to record into a catalog written by an older platform version (before it
    recorded deployments), naming what to do."""
    if not location.exists():
        return
    names = set(table_schema(location).names)
    missing = [name for name in CATALOG_SCHEMA.names if name not in names]
    if missing:
        raise ValueError(
            f"the dataset catalog at {location.uri} was written by an older platform version "
            f"(no {', '.join(missing)}); move it aside and the next run starts a new one"
        )


_Key = tuple[str, str, str, int]


def _key(deployment: str, dataset: str, partition: str, delta_version: int) -> _Key:
    return (deployment, dataset, partition, int(delta_version))


def _rows_except(location: DeltaLocation, keys: set[_Key]) -> list[pa.RecordBatch]:
    """The catalog's current rows, except those ``keys`` replace."""
    if not location.exists():
        return []
    kept = []
    columns = ["deployment", "dataset", "partition", "delta_version"]
    for batch in snapshot(location, UNPARTITIONED).all_batches(columns=CATALOG_SCHEMA.names):
        rows = batch.select(columns).to_pylist()
        mask = pa.array([_key(**r) not in keys for r in rows], pa.bool_())
        kept.append(batch.filter(mask).select(CATALOG_SCHEMA.names).cast(CATALOG_SCHEMA))
    return kept
