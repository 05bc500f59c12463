"""Row-level rules: which rows of a feature partition are fit to score, and why others are not.

Every rule is the deployment's ``Contract``: its key columns (one or more, any type), its
partition column and its feature columns with their types, ranges and categories.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pandas import DataFrame
from pandas.core.util.hashing import hash_pandas_object

from batch_inference_platform.lib.deployments.partitioning import PartitionKind
from batch_inference_platform.lib.features.contract import Column, Contract, Kind

REASON_COLUMN = "quarantine_reason"


def schema_problems(schema: pa.Schema, contract: Contract) -> list[str]:
    """Contract violations of a partition's schema: missing columns and wrong types."""
    problems = []
    for column in contract.all_columns:
        index = schema.get_field_index(column.name)
        if index < 0:
            problems.append(f"missing column {column.name!r} ({column.kind.value})")
        elif not column.kind.accepts(schema.field(index).type):
            actual = schema.field(index).type
            problems.append(f"column {column.name!r} is {actual}, expected {column.kind.value}")
    name = contract.partitioning.column
    if name is not None:
        expected = "timestamp" if contract.partitioning.kind is PartitionKind.HOURLY else "date"
        index = schema.get_field_index(name)
        if index < 0:
            problems.append(f"missing partition column {name!r} ({expected})")
        elif not _partition_type_ok(contract, schema.field(index).type):
            actual = schema.field(index).type
            problems.append(f"partition column {name!r} is {actual}, expected {expected}")
    return problems


def _partition_type_ok(contract: Contract, arrow_type: pa.DataType) -> bool:
    if contract.partitioning.kind is PartitionKind.HOURLY:
        return pa.types.is_timestamp(arrow_type)
    return Kind.DATE.accepts(arrow_type)


def canonical_schema(contract: Contract, with_reason: bool = False) -> pa.Schema:
    """The validated table's schema (``contract.validated_schema()``); with the reason column
    for quarantine, where every column is nullable (a null key or partition value is a reason
    to be quarantined)."""
    schema = contract.validated_schema()
    if not with_reason:
        return schema
    fields = [field.with_nullable(True) for field in schema]
    return pa.schema([*fields, pa.field(REASON_COLUMN, pa.string())])


def to_canonical(batch: pa.RecordBatch, contract: Contract) -> pa.RecordBatch:
    """Keep the contract's columns, cast to their stored types (the label and extras drop):
    keys and features to their family's canonical type, the partition column to the
    partitioning's (a date, or a UTC timestamp for hours)."""
    schema = canonical_schema(contract)
    arrays = [pc.cast(batch.column(field.name), field.type) for field in schema]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def duplicate_reason(contract: Contract) -> str:
    """The reason of a row whose key was seen before: ``duplicate account_id`` or
    ``duplicate (region, account_id)``."""
    return f"duplicate {key_label(contract)}"


def key_label(contract: Contract) -> str:
    names = contract.key_names
    return names[0] if len(names) == 1 else f"({', '.join(names)})"


def key_hashes(batch: pa.RecordBatch, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """A uint64 per row identifying its key (the value itself for a single integer key, a
    hash of the key columns otherwise) and a mask of the rows whose key has no null."""
    columns = [batch.column(name) for name in names]
    valid = np.ones(batch.num_rows, dtype=bool)
    for column in columns:
        if column.null_count:
            valid &= _np(pc.is_valid(column))
    if len(columns) == 1 and pa.types.is_integer(columns[0].type):
        values = pc.fill_null(pc.cast(columns[0], pa.int64()), pa.scalar(0, pa.int64()))
        return np.asarray(values, np.int64).view(np.uint64), valid
    frame = DataFrame({str(i): _hashable(column) for i, column in enumerate(columns)}, copy=False)
    hashes = np.asarray(hash_pandas_object(frame, index=False), np.uint64)
    return hashes, valid


def _hashable(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A column as numpy values that hash by value (dates as day numbers, strings as str)."""
    if pa.types.is_dictionary(column.type):
        column = pc.cast(column, column.type.value_type)
    if pa.types.is_date(column.type):
        column = pc.cast(pc.cast(column, pa.date32()), pa.int32())
    elif pa.types.is_timestamp(column.type):
        column = pc.cast(column, pa.int64())
    elif pa.types.is_large_string(column.type):
        column = pc.cast(column, pa.string())
    return np.asarray(column.to_numpy(zero_copy_only=False))


class RowRules:
    """Evaluates row rules batch by batch over one partition, in read order.

    A row fails when a required value (a key, the partition column, a required feature) is
    null, a value is outside its contract range, a category is unknown, its partition column
    does not hold partition ``key``'s value, or its key was already seen (the first occurrence
    of a duplicated key is kept; ``duplicated_keys`` holds ``key_hashes`` of the keys that
    occur more than once in the partition).
    """

    def __init__(self, contract: Contract, key: str, duplicated_keys: np.ndarray) -> None:
        self._contract = contract
        partitioning = contract.partitioning
        self._value = partitioning.scalar(key) if partitioning.partitioned else None
        self._duplicated = np.sort(np.asarray(duplicated_keys, np.uint64))
        self._duplicate_reason = duplicate_reason(contract)
        self._seen_duplicates: set[tuple[object, ...]] = set()

    def reasons(self, batch: pa.RecordBatch) -> pa.Array:
        """A reason string per row (null where the row passes)."""
        failures = [(name, np.asarray(mask)) for name, mask in self._rule_masks(batch)]
        failures.append((self._duplicate_reason, self._duplicate_mask(batch)))
        any_failure = np.zeros(batch.num_rows, dtype=bool)
        for _, mask in failures:
            any_failure |= mask
        reasons: list[str | None] = [None] * batch.num_rows
        for row in np.flatnonzero(any_failure):
            reasons[row] = "; ".join(name for name, mask in failures if mask[row])
        return pa.array(reasons, pa.string())

    def _rule_masks(self, batch: pa.RecordBatch) -> list[tuple[str, np.ndarray]]:
        masks = []
        for column in self._contract.all_columns:
            values = batch.column(column.name)
            if column.required:
                masks.append((f"{column.name} is null", _np(pc.is_null(values))))
            masks.extend(_value_masks(column, values))
        name = self._contract.partitioning.column
        if name is not None and self._value is not None:
            values = pc.cast(batch.column(name), self._value.type)
            masks.append((f"{name} is null", _np(pc.is_null(values))))
            masks.append((f"{name} outside partition", _np(pc.not_equal(values, self._value))))
        return masks

    def _duplicate_mask(self, batch: pa.RecordBatch) -> np.ndarray:
        mask = np.zeros(batch.num_rows, dtype=bool)
        if self._duplicated.size == 0:
            return mask
        names = self._contract.key_names
        hashes, valid = key_hashes(batch, names)
        candidates = np.flatnonzero(valid & np.isin(hashes, self._duplicated))
        if candidates.size == 0:
            return mask
        # Only rows whose key hash repeats are compared by value (exact, despite collisions).
        keys = batch.select(names).take(candidates).to_pylist()
        for row, values in zip(candidates.tolist(), keys, strict=True):
            key = tuple(values[name] for name in names)
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
