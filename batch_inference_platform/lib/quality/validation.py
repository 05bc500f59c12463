"""Partition validation: profile a feature partition, judge it, and split its rows.

Validation streams the partition three times at most - once to profile it, then once per
output (validated rows, quarantined rows) - so memory holds one batch plus the partition's key
column (for duplicate detection), never the whole partition.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batch_inference_platform.lib.features.contract import FEATURE_COLUMNS, KEY_COLUMN
from batch_inference_platform.lib.quality.rules import (
    RowRules,
    canonical_schema,
    schema_problems,
    to_canonical,
)

ROW_CHECKS = (
    "row_count_at_least_minimum",
    "null_rates_within_limits",
    "quarantine_rate_within_limit",
    "duplicate_keys_within_limit",
)
"""Checks that need readable rows; they are reported as failed when the schema is wrong."""


class BatchSource(Protocol):
    """A re-readable partition: each call streams its batches from the start."""

    def __call__(self, columns: list[str] | None = None) -> Iterable[pa.RecordBatch]: ...


@dataclass(frozen=True)
class ValidationPolicy:
    """Partition-level limits; a partition outside them is not scored."""

    min_rows: int
    max_null_rate: float
    max_quarantine_rate: float
    max_duplicate_rate: float


@dataclass(frozen=True)
class CheckOutcome:
    """The verdict of one data-quality check, with the figures behind it."""

    name: str
    passed: bool
    description: str
    metadata: dict[str, float | int | str] = field(default_factory=dict)


@dataclass
class PartitionProfile:
    """What a partition holds: size, schema problems, nulls and failing rows by reason."""

    rows: int = 0
    schema_problems: list[str] = field(default_factory=list)
    null_counts: Counter[str] = field(default_factory=Counter)
    reason_counts: Counter[str] = field(default_factory=Counter)
    quarantined_rows: int = 0
    duplicate_rows: int = 0
    duplicated_keys: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))

    @property
    def valid_rows(self) -> int:
        return self.rows - self.quarantined_rows

    def rate(self, count: int) -> float:
        return count / self.rows if self.rows else 0.0


def profile_partition(source: BatchSource, schema: pa.Schema, day: dt.date) -> PartitionProfile:
    """Profile one partition; stops at the schema if the schema breaks the contract."""
    profile = PartitionProfile(schema_problems=schema_problems(schema))
    if profile.schema_problems:
        return profile
    profile.duplicated_keys = duplicated_keys(source)
    rules = RowRules(day, profile.duplicated_keys)
    for batch in source():
        reasons = rules.reasons(batch)
        profile.rows += batch.num_rows
        for column in FEATURE_COLUMNS:
            profile.null_counts[column.name] += batch.column(column.name).null_count
        failing = reasons.drop_null()
        profile.quarantined_rows += len(failing)
        for reason in failing.to_pylist():
            assert reason is not None
            profile.reason_counts[reason] += 1
            if "duplicate customer_id" in reason:
                profile.duplicate_rows += 1
    return profile


def judge(profile: PartitionProfile, policy: ValidationPolicy) -> list[CheckOutcome]:
    """The partition-level checks; any failure blocks scoring of the partition."""
    schema_ok = not profile.schema_problems
    outcomes = [
        CheckOutcome(
            "schema_matches_contract",
            schema_ok,
            "Columns and types match the feature contract."
            if schema_ok
            else "; ".join(profile.schema_problems),
            {"problems": len(profile.schema_problems)},
        )
    ]
    if not schema_ok:
        return outcomes + [
            CheckOutcome(name, False, "Not evaluated: the schema does not match the contract.")
            for name in ROW_CHECKS
        ]
    outcomes.append(
        CheckOutcome(
            "row_count_at_least_minimum",
            profile.rows >= policy.min_rows,
            f"{profile.rows} rows (minimum {policy.min_rows}).",
            {"rows": profile.rows, "min_rows": policy.min_rows},
        )
    )
    too_sparse = {}
    for column in FEATURE_COLUMNS:
        limit = column.max_null_rate if column.max_null_rate is not None else policy.max_null_rate
        rate = profile.rate(profile.null_counts[column.name])
        if rate > limit or (profile.rows and rate == 1.0):
            too_sparse[column.name] = f"{rate:.1%} null (limit {limit:.0%})"
    outcomes.append(
        CheckOutcome(
            "null_rates_within_limits",
            not too_sparse,
            "; ".join(f"{name}: {text}" for name, text in too_sparse.items())
            or "Every column's null rate is within its limit.",
            {"columns_over_limit": len(too_sparse)},
        )
    )
    quarantine_rate = profile.rate(profile.quarantined_rows)
    outcomes.append(
        CheckOutcome(
            "quarantine_rate_within_limit",
            quarantine_rate <= policy.max_quarantine_rate,
            f"{profile.quarantined_rows} of {profile.rows} rows quarantined "
            f"({quarantine_rate:.2%}, limit {policy.max_quarantine_rate:.2%}); top reasons: "
            + (", ".join(f"{r} x{n}" for r, n in profile.reason_counts.most_common(3)) or "none"),
            {"quarantined_rows": profile.quarantined_rows, "quarantine_rate": quarantine_rate},
        )
    )
    duplicate_rate = profile.rate(profile.duplicate_rows)
    outcomes.append(
        CheckOutcome(
            "duplicate_keys_within_limit",
            duplicate_rate <= policy.max_duplicate_rate,
            f"{profile.duplicate_rows} repeated {KEY_COLUMN} rows ({duplicate_rate:.3%}, "
            f"limit {policy.max_duplicate_rate:.2%}).",
            {"duplicate_rows": profile.duplicate_rows, "duplicate_rate": duplicate_rate},
        )
    )
    return outcomes


def valid_rows(
    source: BatchSource, day: dt.date, profile: PartitionProfile
) -> Iterator[pa.RecordBatch]:
    """The partition's passing rows, in contract types."""
    rules = RowRules(day, profile.duplicated_keys)
    for batch in source():
        keep = pc.is_null(rules.reasons(batch))
        yield to_canonical(batch.filter(keep))


def quarantined_rows(
    source: BatchSource, day: dt.date, profile: PartitionProfile
) -> Iterator[pa.RecordBatch]:
    """The partition's failing rows, in contract types, each with its reasons."""
    rules = RowRules(day, profile.duplicated_keys)
    schema = canonical_schema(with_reason=True)
    for batch in source():
        reasons = rules.reasons(batch)
        failing = pc.is_valid(reasons)
        rows = to_canonical(batch.filter(failing))
        yield pa.RecordBatch.from_arrays([*rows.columns, reasons.filter(failing)], schema=schema)


def duplicated_keys(source: BatchSource) -> np.ndarray:
    """Keys that occur more than once in the partition (reads only the key column)."""
    keys = [b.column(KEY_COLUMN) for b in source(columns=[KEY_COLUMN])]
    if not keys:
        return np.empty(0, np.int64)
    counts = pc.value_counts(pa.chunked_array(keys).combine_chunks())
    repeated = pc.filter(
        counts.field("values"), pc.greater(counts.field("counts"), pa.scalar(1, pa.int64()))
    )
    return np.asarray(repeated.drop_null().to_numpy(zero_copy_only=False), np.int64)
