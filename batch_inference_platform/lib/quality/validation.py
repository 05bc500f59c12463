"""Partition validation: profile a feature partition, judge it, and split its rows.

Validation streams the partition three times at most - once to profile it, then once per
output (validated rows, quarantined rows) - so memory holds one batch plus one 64-bit hash per
row of the partition's key columns (for duplicate detection), never the whole partition.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batch_inference_platform.lib.features.contract import Contract
from batch_inference_platform.lib.quality.rules import (
    RowRules,
    canonical_schema,
    duplicate_reason,
    key_hashes,
    key_label,
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
    duplicated_keys: np.ndarray = field(default_factory=lambda: np.empty(0, np.uint64))
    """``key_hashes`` of the keys that occur more than once."""

    def valid_rows(self) -> int:
        return self.rows - self.quarantined_rows

    def rate(self, count: int) -> float:
        return count / self.rows if self.rows else 0.0


def profile_partition(
    source: BatchSource, schema: pa.Schema, contract: Contract, key: str
) -> PartitionProfile:
    """Profile partition ``key``; stops at the schema if the schema breaks the contract."""
    profile = PartitionProfile(schema_problems=schema_problems(schema, contract))
    if profile.schema_problems:
        return profile
    profile.duplicated_keys = duplicated_keys(source, contract)
    rules = RowRules(contract, key, profile.duplicated_keys)
    duplicate = duplicate_reason(contract)
    columns = contract.validated_schema().names
    for batch in source():
        reasons = rules.reasons(batch)
        profile.rows += batch.num_rows
        for name in columns:
            profile.null_counts[name] += batch.column(name).null_count
        failing = reasons.drop_null()
        profile.quarantined_rows += len(failing)
        for reason, count in _counts(failing):
            profile.reason_counts[reason] += count
            if duplicate in reason.split("; "):
                profile.duplicate_rows += count
    return profile


def _counts(reasons: pa.Array) -> list[tuple[str, int]]:
    """Each distinct reason and how many rows give it."""
    if len(reasons) == 0:
        return []
    counts = pc.value_counts(reasons)
    values = counts.field("values").to_pylist()  # pyright: ignore[reportAttributeAccessIssue]
    numbers = counts.field("counts").to_pylist()  # pyright: ignore[reportAttributeAccessIssue]
    return [(str(v), int(n or 0)) for v, n in zip(values, numbers, strict=True)]


def judge(
    profile: PartitionProfile, policy: ValidationPolicy, contract: Contract
) -> list[CheckOutcome]:
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
    limits = {c.name: c.max_null_rate for c in contract.all_columns}
    for name in contract.validated_schema().names:
        limit = limits.get(name)
        limit = limit if limit is not None else policy.max_null_rate
        rate = profile.rate(profile.null_counts[name])
        if rate > limit or (profile.rows and rate == 1.0):
            too_sparse[name] = f"{rate:.1%} null (limit {limit:.0%})"
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
            f"{profile.duplicate_rows} repeated {key_label(contract)} rows ({duplicate_rate:.3%}, "
            f"limit {policy.max_duplicate_rate:.2%}).",
            {"duplicate_rows": profile.duplicate_rows, "duplicate_rate": duplicate_rate},
        )
    )
    return outcomes


def valid_rows(
    source: BatchSource, contract: Contract, key: str, profile: PartitionProfile
) -> Iterator[pa.RecordBatch]:
    """The partition's passing rows, in the validated table's types."""
    rules = RowRules(contract, key, profile.duplicated_keys)
    for batch in source():
        keep = pc.is_null(rules.reasons(batch))
        yield to_canonical(batch.filter(keep), contract)


def quarantined_rows(
    source: BatchSource, contract: Contract, key: str, profile: PartitionProfile
) -> Iterator[pa.RecordBatch]:
    """The partition's failing rows, in contract types, each with its reasons."""
    rules = RowRules(contract, key, profile.duplicated_keys)
    schema = canonical_schema(contract, with_reason=True)
    for batch in source():
        reasons = rules.reasons(batch)
        failing = pc.is_valid(reasons)
        rows = to_canonical(batch.filter(failing), contract)
        yield pa.RecordBatch.from_arrays([*rows.columns, reasons.filter(failing)], schema=schema)


def duplicated_keys(source: BatchSource, contract: Contract) -> np.ndarray:
    """``key_hashes`` of the keys that occur more than once in the partition, sorted (reads
    only the key columns and holds one uint64 per row; rows with a null key are left out)."""
    names = contract.key_names
    parts = []
    for batch in source(columns=names):
        hashes, valid = key_hashes(batch, names)
        parts.append(hashes[valid])
    if not parts:
        return np.empty(0, np.uint64)
    hashes = np.sort(np.concatenate(parts))
    repeated = hashes[1:][hashes[1:] == hashes[:-1]]
    return np.unique(repeated)
