"""The churn demo source: a deterministic generator of subscription-churn snapshots.

Each partition is a snapshot of the same subscriber base (accounts ``acct-000001`` on) with
values shaped like a subscription business: short tenures dominate, three plans priced apart
with add-ons on top, support tickets that cluster on new and unhappy accounts, and a
``churn_risk`` label (low / medium / high) driven by those features. A small share of rows is
deliberately dirty (re-sent account ids, negative charges, a plan the catalogue no longer has),
as real feeds are. The same (seed, partition key, rows) always gives the same bytes.

The columns it writes (``CHURN_COLUMNS``, with the ranges a contract may declare for them) are
this producer's; a deployment declares its contract in its ``defs.yaml``.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from batch_inference_platform.lib.features.contract import Column, Kind

KEY_COLUMN = "account_id"
SNAPSHOT_COLUMN = "snapshot_date"
"""The partition column the demo writes unless a deployment names another."""
LABEL_COLUMN = "churn_risk"
CLASSES: tuple[str, ...] = ("low", "medium", "high")
"""The label's classes, least to most at risk."""

FIRST_ACCOUNT = 1
DIRTY_ROW_SHARE = 0.001
"""Share of rows made invalid on purpose, per defect kind."""
DEFAULT_BATCH_ROWS = 65_536

PLANS: tuple[str, ...] = ("basic", "plus", "pro")
REGIONS: tuple[str, ...] = ("emea", "amer", "apac")
UNKNOWN_PLAN = "legacy"
"""The retired plan dirty rows carry (outside the contract's categories)."""

_PLAN_PRICE = np.array([14.99, 29.99, 59.99])
_PLAN_WEIGHTS = (0.52, 0.31, 0.17)
_REGION_WEIGHTS = (0.34, 0.44, 0.22)
_LOGIN_NULL_SHARE = 0.04
"""Accounts whose last login is unknown (tracking consent withheld): null, not zero."""
_THRESHOLDS = (1.6, 2.75)
"""Risk score cuts between low | medium | high (about 60% / 28% / 12% of accounts)."""

CHURN_COLUMNS: tuple[Column, ...] = (
    Column("tenure_months", Kind.INTEGER, required=True, min_value=0, max_value=600),
    Column("plan", Kind.STRING, required=True, categories=PLANS),
    Column("monthly_charges", Kind.FLOAT, required=True, min_value=0, max_value=10_000),
    Column("support_tickets_90d", Kind.INTEGER, required=True, min_value=0, max_value=1_000),
    Column("region", Kind.STRING, required=True, categories=REGIONS),
    Column("last_login_days", Kind.FLOAT, min_value=0, max_value=3_650, max_null_rate=0.2),
)
"""The feature columns with the ranges a churn contract declares (dirty rows fall outside)."""

CHURN_FEATURES: tuple[str, ...] = tuple(c.name for c in CHURN_COLUMNS)
"""The inputs the demo churn model trains on."""

_ARROW_TYPES = {Kind.INTEGER: pa.int32(), Kind.FLOAT: pa.float64(), Kind.STRING: pa.string()}


def churn_raw_schema(
    partition_column: str | None = SNAPSHOT_COLUMN, partition_type: pa.DataType | None = None
) -> pa.Schema:
    """The schema the generator writes: key, partition column, features, the training label.

    ``partition_column`` None: no partition column (an unpartitioned deployment);
    ``partition_type`` defaults to a date (daily partitions)."""
    fields: list[pa.Field] = [pa.field(KEY_COLUMN, pa.string(), nullable=False)]
    if partition_column is not None:
        fields.append(pa.field(partition_column, partition_type or pa.date32(), nullable=False))
    fields += [pa.field(c.name, _ARROW_TYPES[c.kind]) for c in CHURN_COLUMNS]
    fields.append(pa.field(LABEL_COLUMN, pa.string()))
    return pa.schema(fields)


def generate_churn(
    key: str,
    rows: int,
    *,
    seed: int = 7,
    partition_column: str | None = None,
    partition: pa.Scalar | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> Iterator[pa.RecordBatch]:
    """Yield snapshot ``key`` as record batches of at most ``batch_rows``.

    The values depend on (seed, key, rows) only; ``partition`` (a date or an hour's timestamp)
    is written in ``partition_column`` of every row, right after the key. Without them (an
    unpartitioned table) the rows carry no partition column."""
    if (partition is None) != (partition_column is None):
        raise ValueError("a partition column needs a partition value, and only it")
    schema = churn_raw_schema(partition_column, partition.type if partition is not None else None)
    key_seed = zlib.crc32(f"{seed}:churn:{key}".encode())
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


def risk_score(
    tenure: np.ndarray,
    plan: np.ndarray,
    extra_charges: np.ndarray,
    tickets: np.ndarray,
    region: np.ndarray,
    last_login: np.ndarray,
) -> np.ndarray:
    """The latent churn risk before noise: new accounts, many tickets, long absences, the cheap
    plan and add-on spending raise it; tenure and the pro plan lower it."""
    absent = np.where(np.isnan(last_login), 7.0, np.minimum(last_login, 90.0))
    return (
        1.7 * np.exp(-tenure / 12.0)
        + 0.55 * tickets
        + 0.045 * absent
        + 0.35 * (plan == 0)
        - 0.3 * (plan == 2)
        + 0.02 * extra_charges
        + 0.15 * (region == 2)
    )


def _batch(rng: np.random.Generator, start: int, n: int) -> dict[str, pa.Array]:
    first = FIRST_ACCOUNT + start
    ids = [f"acct-{i:06d}" for i in range(first, first + n)]
    tenure = np.clip(rng.gamma(1.3, 20.0, n), 0, 600).round().astype(np.int64)
    plan = rng.choice(len(PLANS), n, p=_PLAN_WEIGHTS)
    extra = rng.gamma(1.2, 4.0, n)
    charges = (_PLAN_PRICE[plan] * rng.uniform(0.9, 1.1, n) + extra).round(2)
    region = rng.choice(len(REGIONS), n, p=_REGION_WEIGHTS)
    engagement = rng.normal(0.0, 1.0, n)
    tickets = rng.poisson(0.35 + 0.9 * (tenure < 6) + 0.4 * np.maximum(-engagement, 0), n)
    last_login = np.clip(rng.exponential(2.0 + 12.0 / (1 + np.exp(2 * engagement))), 0, 3650)
    last_login = last_login.round(1)
    last_login[rng.random(n) < _LOGIN_NULL_SHARE] = np.nan

    score = risk_score(tenure, plan, extra, tickets, region, last_login)
    score = score + rng.logistic(0.0, 0.35, n)
    label_codes = np.searchsorted(np.asarray(_THRESHOLDS), score)
    labels = np.asarray(CLASSES, dtype=object)[label_codes]

    plans = np.asarray(PLANS, dtype=object)[plan]
    _make_dirty(rng, ids, plans, charges, n)
    return {
        KEY_COLUMN: pa.array(ids, pa.string()),
        "tenure_months": pa.array(tenure, pa.int32()),
        "plan": pa.array(plans, pa.string()),
        "monthly_charges": pa.array(charges, pa.float64()),
        "support_tickets_90d": pa.array(tickets, pa.int32()),
        "region": pa.array(np.asarray(REGIONS, dtype=object)[region], pa.string()),
        "last_login_days": pa.array(last_login, pa.float64(), from_pandas=True),
        LABEL_COLUMN: pa.array(labels, pa.string()),
    }


def _make_dirty(
    rng: np.random.Generator, ids: list[str], plans: np.ndarray, charges: np.ndarray, n: int
) -> None:
    """Plant the defects real feeds carry: re-sent accounts, refunds booked as negative
    charges, a retired plan."""
    for i in np.flatnonzero(rng.random(n) < DIRTY_ROW_SHARE):
        if i > 0:
            ids[i] = ids[i - 1]
    negative = rng.random(n) < DIRTY_ROW_SHARE
    charges[negative] = -charges[negative]
    plans[rng.random(n) < DIRTY_ROW_SHARE] = UNKNOWN_PLAN


def _repeat(value: pa.Scalar, count: int) -> pa.Array:
    """``count`` copies of ``value`` (the stubs know ``pa.repeat`` of extension scalars only)."""
    return pa.repeat(value, count)  # pyright: ignore[reportCallIssue, reportArgumentType]
