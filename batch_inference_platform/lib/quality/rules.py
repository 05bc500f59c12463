"""Row-level rules: which rows of a feature partition are fit to score, and why others are not."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batch_inference_platform.lib.features.contract import (
    DATE_COLUMN,
    FEATURE_COLUMNS,
    KEY_COLUMN,
    Column,
    Kind,
)

REASON_COLUMN = "quarantine_reason"


def schema_problems(schema: pa.Schema) -> list[str]:
    """Contract violations of a partition's schema: missing columns and wrong types."""
    problems = []
    for column in FEATURE_COLUMNS:
        index = schema.get_field_index(column.name)
        if index < 0:
            problems.append(f"missing column {column.name!r} ({column.kind.value})")
        elif not column.kind.accepts(schema.field(index).type):
            actual = schema.field(index).type
            problems.append(f"column {column.name!r} is {actual}, expected {column.kind.value}")
    return problems


def canonical_schema(with_reason: bool = False) -> pa.Schema:
    """Contract columns in their stored types (plus the reason column for quarantine)."""
    fields = [pa.field(c.name, c.kind.canonical) for c in FEATURE_COLUMNS]
    if with_reason:
        fields.append(pa.field(REASON_COLUMN, pa.string()))
    return pa.schema(fields)


def to_canonical(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Keep the contract columns, cast to their stored types (the label and extras drop)."""
    arrays = [pc.cast(batch.column(c.name), c.kind.canonical) for c in FEATURE_COLUMNS]
    return pa.RecordBatch.from_arrays(arrays, schema=canonical_schema())


class RowRules:
    """Evaluates row rules batch by batch over one partition, in read order.

    A row fails when a required value is null, a value is outside its contract range, a
    category is unknown, its date is not the partition's, or its key was already seen
    (the first occurrence of a duplicated key is kept; ``duplicated_keys`` lists the keys that
    occur more than once in the partition).
    """

    def __init__(self, day: dt.date, duplicated_keys: np.ndarray) -> None:
        self._day = pa.scalar(day, pa.date32())
        self._duplicated = np.sort(duplicated_keys.astype(np.int64))
        self._seen_duplicates: set[int] = set()

    def reasons(self, batch: pa.RecordBatch) -> pa.Array:
        """A reason string per row (null where the row passes)."""
        failures = [(name, np.asarray(mask)) for name, mask in self._rule_masks(batch)]
        failures.append(("duplicate customer_id", self._duplicate_mask(batch)))
        any_failure = np.zeros(batch.num_rows, dtype=bool)
        for _, mask in failures:
            any_failure |= mask
        reasons: list[str | None] = [None] * batch.num_rows
        for row in np.flatnonzero(any_failure):
            reasons[row] = "; ".join(name for name, mask in failures if mask[row])
        return pa.array(reasons, pa.string())

    def _rule_masks(self, batch: pa.RecordBatch) -> list[tuple[str, np.ndarray]]:
        masks = []
        for column in FEATURE_COLUMNS:
            values = batch.column(column.name)
            if column.required:
                masks.append((f"{column.name} is null", _np(pc.is_null(values))))
            masks.extend(_value_masks(column, values))
        outside = pc.not_equal(batch.column(DATE_COLUMN).cast(pa.date32()), self._day)
        masks.append((f"{DATE_COLUMN} outside partition", _np(outside)))
        return masks

    def _duplicate_mask(self, batch: pa.RecordBatch) -> np.ndarray:
        keys = np.asarray(pc.fill_null(batch.column(KEY_COLUMN), pa.scalar(-1, pa.int64())))
        mask = np.zeros(len(keys), dtype=bool)
        if self._duplicated.size == 0:
            return mask
        for row in np.flatnonzero(np.isin(keys, self._duplicated)):
            key = int(keys[row])
            mask[row] = key in self._seen_duplicates
            self._seen_duplicates.add(key)
        return mask


def _value_masks(column: Column, values: pa.Array) -> list[tuple[str, np.ndarray]]:
    masks = []
    if column.kind in (Kind.INTEGER, Kind.FLOAT):
        numeric = pc.cast(values, pa.float64())
        if column.min_value is not None:
            masks.append(
                (
                    f"{column.name} < {column.min_value:g}",
                    _np(pc.less(numeric, pa.scalar(column.min_value))),
                )
            )
        if column.max_value is not None:
            masks.append(
                (
                    f"{column.name} > {column.max_value:g}",
                    _np(pc.greater(numeric, pa.scalar(column.max_value))),
                )
            )
        if column.kind is Kind.FLOAT:
            masks.append((f"{column.name} is not finite", _np(pc.is_inf(numeric))))
    if column.categories:
        known = pc.is_in(values.cast(pa.string()), value_set=pa.array(column.categories))
        unknown = pc.and_(pc.invert(known), pc.is_valid(values))
        masks.append((f"{column.name} unknown category", _np(unknown)))
    return masks


def _np(mask: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A boolean Arrow mask as numpy, nulls counting as False (null is judged elsewhere)."""
    return np.asarray(pc.fill_null(mask, pa.scalar(False)), dtype=bool)
