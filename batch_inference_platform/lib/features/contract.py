"""The feature contract: what a credit-risk feature partition must look like to be scored.

The contract is the platform's promise to models: every validated partition has exactly these
columns, with these types, within these ranges. Models are trained on ``MODEL_FEATURES``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import pyarrow as pa

KEY_COLUMN = "customer_id"
DATE_COLUMN = "event_date"
LABEL_COLUMN = "defaulted"


class Kind(Enum):
    """The type family a column belongs to; any physical width of the family is accepted."""

    INTEGER = "integer"
    FLOAT = "float"
    STRING = "string"
    DATE = "date"

    @property
    def canonical(self) -> pa.DataType:
        """The Arrow type validated tables store for this family."""
        return {
            Kind.INTEGER: pa.int64(),
            Kind.FLOAT: pa.float64(),
            Kind.STRING: pa.string(),
            Kind.DATE: pa.date32(),
        }[self]

    def accepts(self, arrow_type: pa.DataType) -> bool:
        """Whether a column of ``arrow_type`` can be read losslessly as this family."""
        if pa.types.is_dictionary(arrow_type):
            arrow_type = arrow_type.value_type
        if self is Kind.INTEGER:
            return pa.types.is_integer(arrow_type)
        if self is Kind.FLOAT:
            return pa.types.is_floating(arrow_type) or pa.types.is_integer(arrow_type)
        if self is Kind.STRING:
            return pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type)
        return pa.types.is_date32(arrow_type) or pa.types.is_date64(arrow_type)


@dataclass(frozen=True)
class Column:
    """One contract column: its type family, whether nulls are allowed, and its valid range.

    ``required`` columns may never be null (a null row is quarantined); ``max_null_rate``
    overrides the policy's partition-level null-rate limit for columns that are sparse by nature.
    """

    name: str
    kind: Kind
    required: bool = False
    min_value: float | None = None
    max_value: float | None = None
    categories: tuple[str, ...] = ()
    max_null_rate: float | None = None


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

KEY_COLUMNS: tuple[Column, ...] = (
    Column(KEY_COLUMN, Kind.INTEGER, required=True, min_value=0),
    Column(DATE_COLUMN, Kind.DATE, required=True),
)

FEATURE_COLUMNS: tuple[Column, ...] = KEY_COLUMNS + NUMERIC_COLUMNS + CATEGORICAL_COLUMNS
"""Every column a validated partition carries, in order (the label is not a feature)."""

MODEL_FEATURES: tuple[str, ...] = tuple(c.name for c in NUMERIC_COLUMNS)
"""The inputs demo models are trained on: the 30 numeric features, as float64."""


def validated_schema() -> pa.Schema:
    """The Arrow schema of a validated feature partition."""
    return pa.schema(
        [pa.field(c.name, c.kind.canonical, nullable=not c.required) for c in FEATURE_COLUMNS]
    )
