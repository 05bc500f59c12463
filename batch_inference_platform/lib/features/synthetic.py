"""The credit-risk demo source: a deterministic generator of realistic credit feature partitions.

Each partition is a snapshot of the same customer base (ids ``1_000_000 + i``) with values drawn
from distributions shaped like consumer-lending data: log-normal incomes, bureau scores around
690, sparse delinquency history, and a default label driven by those features. A small share of
rows is deliberately dirty (duplicated ids, out-of-range ages, negative incomes), as real feeds
are. The same (seed, partition key, rows) always gives the same bytes.

This module is the demo *producer*: it owns the columns it writes (``NUMERIC_COLUMNS``,
``CATEGORICAL_COLUMNS``, with the ranges a deployment's contract may declare for them). The
platform itself knows no credit columns; a deployment's ``defs.yaml`` declares its contract.
"""

from __future__ import annotations

import datetime as dt
import zlib
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from batch_inference_platform.lib.features.contract import Column, Kind

KEY_COLUMN = "customer_id"
DATE_COLUMN = "event_date"
"""The partition column the demo writes unless a deployment names another."""
LABEL_COLUMN = "defaulted"

FIRST_CUSTOMER_ID = 1_000_000
DIRTY_ROW_SHARE = 0.001
"""Share of rows made invalid on purpose, per defect kind."""

DEFAULT_BATCH_ROWS = 65_536


def _f(name: str, lo: float | None, hi: float | None, **kw: object) -> Column:
    return Column(name, Kind.FLOAT, min_value=lo, max_value=hi, **kw)  # type: ignore[arg-type]


def _i(name: str, lo: float | None, hi: float | None, **kw: object) -> Column:
    return Column(name, Kind.INTEGER, min_value=lo, max_value=hi, **kw)  # type: ignore[arg-type]


NUMERIC_COLUMNS: tuple[Column, ...] = (
    _i("age", 18, 100, required=True),
    _f("annual_income", 0, 1e8, required=True),
    _f("employment_length_years", 0, 60),
    _f("loan_amount", 100, 5e6, required=True),
    _i("loan_term_months", 6, 360, required=True),
    _f("interest_rate", 0, 60),
    _f("installment", 0, 1e6),
    _f("debt_to_income", 0, 300),
    _i("credit_score", 300, 850, required=True),
    _f("credit_history_years", 0, 80),
    _i("num_open_accounts", 0, 200),
    _i("num_total_accounts", 0, 400),
    _f("revolving_balance", 0, 1e7),
    _f("revolving_utilization", 0, 5),
    _i("num_delinquencies_2y", 0, 100),
    _i("num_inquiries_6m", 0, 100),
    _f("months_since_last_delinquency", 0, 1200, max_null_rate=0.9),
    _i("num_public_records", 0, 50),
    _i("num_bankruptcies", 0, 50),
    _i("num_mortgage_accounts", 0, 50),
    _f("total_credit_limit", 0, 1e8),
    _f("total_balance_ex_mortgage", 0, 1e8),
    _f("avg_account_age_months", 0, 1200),
    _f("pct_trades_never_delinquent", 0, 100),
    _i("num_late_payments_12m", 0, 365),
    _f("savings_balance", 0, 1e9),
    _f("checking_balance", -1e6, 1e9),
    _f("monthly_housing_payment", 0, 1e6),
    _f("payment_to_income", 0, 10),
    _f("loan_to_income", 0, 100),
)
"""The numeric features with the ranges a credit contract declares (dirty rows fall outside)."""

CATEGORICAL_COLUMNS: tuple[Column, ...] = (
    Column(
        "employment_type",
        Kind.STRING,
        categories=("salaried", "self_employed", "contractor", "unemployed", "retired"),
    ),
    Column("home_ownership", Kind.STRING, categories=("rent", "own", "mortgage", "other")),
    Column(
        "loan_purpose",
        Kind.STRING,
        categories=(
            "debt_consolidation",
            "credit_card",
            "home_improvement",
            "major_purchase",
            "medical",
            "small_business",
            "car",
            "other",
        ),
    ),
    Column("region", Kind.STRING, categories=("northeast", "midwest", "south", "west")),
)

CREDIT_COLUMNS: tuple[Column, ...] = NUMERIC_COLUMNS + CATEGORICAL_COLUMNS
"""Every feature column the demo writes, in order (key, partition column and label excluded)."""

CREDIT_FEATURES: tuple[str, ...] = tuple(c.name for c in NUMERIC_COLUMNS)
"""The inputs the demo credit model trains on: the 30 numeric features, as float64."""

_ARROW_TYPES = {Kind.INTEGER: pa.int32(), Kind.FLOAT: pa.float64()}


def raw_schema(
    partition_column: str | None = DATE_COLUMN, partition_type: pa.DataType | None = None
) -> pa.Schema:
    """The schema the generator writes: key, partition column, features, the training label.

    ``partition_column`` None: no partition column (an unpartitioned deployment);
    ``partition_type`` defaults to a date (daily partitions)."""
    fields: list[pa.Field] = [pa.field(KEY_COLUMN, pa.int64(), nullable=False)]
    if partition_column is not None:
        fields.append(pa.field(partition_column, partition_type or pa.date32(), nullable=False))
    fields += [pa.field(c.name, _ARROW_TYPES[c.kind]) for c in NUMERIC_COLUMNS]
    fields += [pa.field(c.name, pa.string()) for c in CATEGORICAL_COLUMNS]
    fields.append(pa.field(LABEL_COLUMN, pa.int8()))
    return pa.schema(fields)


def generate_partition(
    day: dt.date, rows: int, *, seed: int = 7, batch_rows: int = DEFAULT_BATCH_ROWS
) -> Iterator[pa.RecordBatch]:
    """Yield the daily feature partition for ``day`` (in ``event_date``) as record batches of
    at most ``batch_rows``."""
    return generate(
        day.isoformat(),
        rows,
        seed=seed,
        partition_column=DATE_COLUMN,
        partition=pa.scalar(day, pa.date32()),
        batch_rows=batch_rows,
    )


def generate(
    key: str,
    rows: int,
    *,
    seed: int = 7,
    partition_column: str | None = None,
    partition: pa.Scalar | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> Iterator[pa.RecordBatch]:
    """Yield partition ``key`` as record batches of at most ``batch_rows``.

    The values depend on (seed, key, rows) only; ``partition`` (a date or an hour's timestamp)
    is written in ``partition_column`` of every row, right after the key. Without them (an
    unpartitioned table) the rows carry no partition column."""
    if (partition is None) != (partition_column is None):
        raise ValueError("a partition column needs a partition value, and only it")
    schema = raw_schema(partition_column, partition.type if partition is not None else None)
    key_seed = zlib.crc32(f"{seed}:{key}".encode())
    for start in range(0, rows, batch_rows):
        count = min(batch_rows, rows - start)
        rng = np.random.default_rng([key_seed, start])
        columns = _batch(rng, start, count)
        if partition_column is not None and partition is not None:
            columns = {
                KEY_COLUMN: columns.pop(KEY_COLUMN),
                partition_column: _repeat(partition, count),
                **columns,
            }
        yield pa.RecordBatch.from_pydict(columns, schema=schema)


def _batch(rng: np.random.Generator, start: int, n: int) -> dict[str, pa.Array]:
    ids = np.arange(FIRST_CUSTOMER_ID + start, FIRST_CUSTOMER_ID + start + n, dtype=np.int64)
    age = np.clip(rng.normal(42, 13, n), 18, 95).round()
    income = np.exp(rng.normal(10.9, 0.55, n)).round(2)
    emp_len = np.clip(rng.gamma(2.0, 3.5, n), 0, 50).round(1)
    loan = np.clip(np.exp(rng.normal(9.4, 0.8, n)), 500, 1e6).round(-1)
    term = rng.choice([12, 24, 36, 48, 60, 72, 84], n, p=[0.05, 0.1, 0.4, 0.1, 0.25, 0.05, 0.05])
    score = np.clip(rng.normal(690, 65, n), 300, 850).round()
    rate = np.clip(32 - (score - 300) * 0.045 + rng.normal(0, 1.8, n), 2.5, 36).round(2)
    monthly_rate = rate / 1200
    installment = (loan * monthly_rate / (1 - (1 + monthly_rate) ** -term)).round(2)
    dti = np.clip(rng.gamma(4.0, 4.5, n), 0, 120).round(2)
    history = np.clip(age - 18 - rng.gamma(2, 2, n), 0, 70).round(1)
    open_acc = rng.poisson(9, n)
    total_acc = open_acc + rng.poisson(12, n)
    limit = np.clip(np.exp(rng.normal(10.6, 0.9, n)), 500, 5e6).round(-2)
    utilization = np.clip(rng.beta(2, 3.5, n) * 1.15, 0, 1.5).round(4)
    revolving = (limit * utilization * 0.35).round(2)
    risk = (850 - score) / 550
    delinq = rng.poisson(0.15 + 1.2 * risk, n)
    inquiries = rng.poisson(0.8 + 1.5 * risk, n)
    months_since = np.where(delinq > 0, rng.integers(1, 96, n), np.nan)
    public = rng.poisson(0.08, n)
    bankrupt = np.minimum(public, rng.poisson(0.05, n))
    mortgages = rng.poisson(0.7, n)
    balance = (revolving + rng.gamma(1.5, 9000, n)).round(2)
    avg_age = np.clip(history * 12 * rng.uniform(0.3, 0.7, n), 0, 900).round(1)
    never_delinq = np.clip(100 - delinq * rng.uniform(2, 9, n), 0, 100).round(1)
    late = rng.poisson(0.3 + 2 * risk, n)
    savings = np.round(np.exp(rng.normal(8.5, 1.6, n)), 2)
    checking = np.round(rng.normal(2500, 4000, n), 2)
    housing = np.clip(income / 12 * rng.uniform(0.15, 0.4, n), 300, 20000).round(2)
    pti = np.clip(installment * 12 / income, 0, 10).round(4)
    lti = np.clip(loan / income, 0, 100).round(4)

    logit = (
        -5.5
        + 4.2 * risk
        + 0.9 * pti * 4
        + 0.02 * dti
        + 0.35 * delinq
        + 0.25 * inquiries
        + 1.1 * utilization
        - 0.02 * np.minimum(emp_len, 10)
    )
    label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int8)

    numeric = {
        "age": age,
        "annual_income": income,
        "employment_length_years": emp_len,
        "loan_amount": loan,
        "loan_term_months": term,
        "interest_rate": rate,
        "installment": installment,
        "debt_to_income": dti,
        "credit_score": score,
        "credit_history_years": history,
        "num_open_accounts": open_acc,
        "num_total_accounts": total_acc,
        "revolving_balance": revolving,
        "revolving_utilization": utilization,
        "num_delinquencies_2y": delinq,
        "num_inquiries_6m": inquiries,
        "months_since_last_delinquency": months_since,
        "num_public_records": public,
        "num_bankruptcies": bankrupt,
        "num_mortgage_accounts": mortgages,
        "total_credit_limit": limit,
        "total_balance_ex_mortgage": balance,
        "avg_account_age_months": avg_age,
        "pct_trades_never_delinquent": never_delinq,
        "num_late_payments_12m": late,
        "savings_balance": savings,
        "checking_balance": checking,
        "monthly_housing_payment": housing,
        "payment_to_income": pti,
        "loan_to_income": lti,
    }
    _make_missing(rng, numeric, n)
    _make_dirty(rng, ids, numeric, n)

    columns: dict[str, pa.Array] = {KEY_COLUMN: pa.array(ids, pa.int64())}
    for col in NUMERIC_COLUMNS:
        values = np.asarray(numeric[col.name], dtype=np.float64)
        columns[col.name] = pa.array(values, _ARROW_TYPES[col.kind], from_pandas=True)
    for col in CATEGORICAL_COLUMNS:
        columns[col.name] = _categorical(rng, col.name, col.categories, n)
    columns[LABEL_COLUMN] = pa.array(label, pa.int8())
    return columns


_MISSING_SHARE = {
    "employment_length_years": 0.05,
    "savings_balance": 0.2,
    "debt_to_income": 0.01,
    "avg_account_age_months": 0.02,
}


def _make_missing(rng: np.random.Generator, numeric: dict[str, np.ndarray], n: int) -> None:
    for name, share in _MISSING_SHARE.items():
        values = np.asarray(numeric[name], dtype=np.float64)
        values[rng.random(n) < share] = np.nan
        numeric[name] = values


def _make_dirty(
    rng: np.random.Generator, ids: np.ndarray, numeric: dict[str, np.ndarray], n: int
) -> None:
    """Plant the defects real feeds carry: re-sent ids, impossible ages, negative incomes."""
    dup = np.flatnonzero(rng.random(n) < DIRTY_ROW_SHARE)
    dup = dup[dup > 0]
    ids[dup] = ids[dup - 1]
    numeric["age"] = np.where(rng.random(n) < DIRTY_ROW_SHARE, 7.0, numeric["age"])
    numeric["annual_income"] = np.where(
        rng.random(n) < DIRTY_ROW_SHARE, -numeric["annual_income"], numeric["annual_income"]
    )


_CATEGORY_WEIGHTS = {
    "employment_type": (0.62, 0.14, 0.1, 0.06, 0.08),
    "home_ownership": (0.42, 0.13, 0.43, 0.02),
    "loan_purpose": (0.45, 0.2, 0.08, 0.07, 0.04, 0.04, 0.07, 0.05),
    "region": (0.18, 0.21, 0.38, 0.23),
}


def _categorical(
    rng: np.random.Generator, name: str, categories: tuple[str, ...], n: int
) -> pa.Array:
    codes = rng.choice(len(categories), n, p=_CATEGORY_WEIGHTS[name])
    values = pa.DictionaryArray.from_arrays(pa.array(codes, pa.int32()), pa.array(categories))
    return values.cast(pa.string())


def _repeat(value: pa.Scalar, count: int) -> pa.Array:
    """``count`` copies of ``value`` (the stubs know ``pa.repeat`` of extension scalars only)."""
    return pa.repeat(value, count)  # pyright: ignore[reportCallIssue, reportArgumentType]
