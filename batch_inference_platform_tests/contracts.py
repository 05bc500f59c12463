"""Small contracts and feature batches for unit tests of validation and scoring (no lake, no
generator): a credit-risk-like contract (integer key, daily partition, numeric features) and
helpers to build others (string keys, two-column keys, hourly partitions)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa

from batch_inference_platform.lib.deployments.partitioning import Partitioning, PartitionKind
from batch_inference_platform.lib.features.contract import Column, Contract, Kind

DAILY = Partitioning(PartitionKind.DAILY, "event_date", dt.datetime(2026, 11, 1, tzinfo=dt.UTC))
HOURLY = Partitioning(PartitionKind.HOURLY, "event_hour", dt.datetime(2026, 11, 1, tzinfo=dt.UTC))
UNPARTITIONED = Partitioning(PartitionKind.NONE)

CREDIT_FEATURES: tuple[Column, ...] = (
    Column("age", Kind.INTEGER, required=True, min_value=18, max_value=100),
    Column("annual_income", Kind.FLOAT, required=True, min_value=0, max_value=1e8),
    Column("loan_amount", Kind.FLOAT, required=True, min_value=100, max_value=5e6),
    Column("credit_score", Kind.INTEGER, required=True, min_value=300, max_value=850),
    Column("debt_to_income", Kind.FLOAT, min_value=0, max_value=300),
    Column(
        "months_since_last_delinquency", Kind.FLOAT, min_value=0, max_value=1200, max_null_rate=0.9
    ),
    Column("region", Kind.STRING, categories=("northeast", "midwest", "south", "west")),
)
CREDIT_MODEL_FEATURES: tuple[str, ...] = tuple(
    c.name for c in CREDIT_FEATURES if c.kind is not Kind.STRING
)
LABEL = "defaulted"


def credit_contract(
    partitioning: Partitioning = DAILY, key: tuple[Column, ...] | None = None
) -> Contract:
    """The credit-risk-like contract: ``customer_id`` (int) unless ``key`` is given."""
    key = key or (Column("customer_id", Kind.INTEGER, required=True),)
    return Contract(key, partitioning, CREDIT_FEATURES)


def credit_batch(
    rows: int,
    *,
    day: dt.date | dt.datetime = dt.date(2026, 11, 2),
    partition_column: str | None = "event_date",
    partition_type: pa.DataType | None = None,
    keys: dict[str, pa.Array] | None = None,
    seed: int = 7,
) -> pa.RecordBatch:
    """Clean rows of the credit contract's features (plus a label), keyed by ``keys`` (default:
    ``customer_id`` 1..rows as int32, a narrower width than the canonical int64)."""
    rng = np.random.default_rng(seed)
    income = rng.lognormal(11, 0.5, rows)
    loan = np.clip(rng.lognormal(9.5, 0.8, rows), 100, 5e6)
    score = rng.integers(300, 851, rows)
    dti = rng.uniform(0, 60, rows)
    months = np.where(rng.random(rows) < 0.6, np.nan, rng.uniform(0, 120, rows))
    logit = -2 + 0.00002 * loan - 0.000004 * income - 0.004 * (score - 650) + 0.02 * dti
    label = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int8)
    columns: dict[str, pa.Array] = dict(
        keys or {"customer_id": pa.array(np.arange(1, rows + 1, dtype=np.int32))}
    )
    if partition_column is not None:
        columns[partition_column] = pa.array([day] * rows, partition_type or pa.date32())
    columns |= {
        "age": pa.array(rng.integers(18, 90, rows).astype(np.int32)),
        "annual_income": pa.array(income),
        "loan_amount": pa.array(loan),
        "credit_score": pa.array(score.astype(np.int16)),
        "debt_to_income": pa.array(dti),
        "months_since_last_delinquency": pa.array(months, from_pandas=True),
        "region": pa.array(rng.choice(["northeast", "midwest", "south", "west"], rows)),
        LABEL: pa.array(label),
    }
    return pa.RecordBatch.from_pydict(columns)


def source_of(*batches: pa.RecordBatch):
    """A re-readable ``BatchSource`` over ``batches``."""

    def source(columns: list[str] | None = None):
        for batch in batches:
            yield batch.select(columns) if columns is not None else batch

    return source
