"""The feature contract: what a deployment's feature partition must look like to be scored.

The contract is the platform's promise to models: every validated partition has exactly the
deployment's key and partition columns and these feature columns, with these types, within
these ranges. A deployment declares it in its ``defs.yaml`` or takes its model's signature.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

import pyarrow as pa

from batch_inference_platform.lib.deployments.partitioning import Partitioning


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

    @classmethod
    def of_type(cls, arrow_type: pa.DataType) -> Kind:
        """The family a stored column belongs to (keys keep their family in every table)."""
        for kind in (Kind.INTEGER, Kind.FLOAT, Kind.STRING, Kind.DATE):
            if kind.accepts(arrow_type) and not (
                kind is Kind.FLOAT and pa.types.is_integer(arrow_type)
            ):
                return kind
        raise ValueError(f"unsupported column type {arrow_type} (integer, float, string, date)")


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


@dataclass(frozen=True)
class Contract:
    """What a deployment's validated partitions hold: keys, the partition column, features.

    ``key`` columns identify a row within a partition (together unique, never null; any type);
    the partition column holds the partition's value; ``columns`` are the features, checked
    against their declared types and ranges.
    """

    key: tuple[Column, ...]
    partitioning: Partitioning
    columns: tuple[Column, ...]

    @property
    def key_names(self) -> list[str]:
        return [c.name for c in self.key]

    @property
    def identity(self) -> list[str]:
        """Key and partition columns: what every derived row carries to name its source row."""
        return [*self.key_names, *self.partitioning.columns]

    @property
    def all_columns(self) -> tuple[Column, ...]:
        """Keys, then features (the partition column is handled by ``partitioning``)."""
        keys = set(self.key_names) | set(self.partitioning.columns)
        return self.key + tuple(c for c in self.columns if c.name not in keys)

    def validated_schema(self) -> pa.Schema:
        """The Arrow schema of a validated partition: keys, partition column, features."""
        fields = [pa.field(c.name, c.kind.canonical, nullable=False) for c in self.key]
        if self.partitioning.column is not None:
            fields.append(
                pa.field(self.partitioning.column, self.partitioning.arrow_type, nullable=False)
            )
        fields += [
            pa.field(c.name, c.kind.canonical, nullable=not c.required)
            for c in self.columns
            if c.name not in self.identity
        ]
        return pa.schema(fields)


def columns_from_signature(inputs: Mapping[str, tuple[str, bool]]) -> tuple[Column, ...]:
    """Contract columns from a model signature's inputs: ``{name: (mlflow type, required)}``.

    Integers and floats keep their family (any range), strings are strings, booleans are
    integers; the model's own signature is the only promise made."""
    kinds = {
        "long": Kind.INTEGER,
        "integer": Kind.INTEGER,
        "boolean": Kind.INTEGER,
        "double": Kind.FLOAT,
        "float": Kind.FLOAT,
        "string": Kind.STRING,
        "datetime": Kind.DATE,
    }
    columns = []
    for name, (mlflow_type, required) in inputs.items():
        if mlflow_type not in kinds:
            raise ValueError(f"signature input {name!r} has type {mlflow_type}, not a column type")
        columns.append(Column(name, kinds[mlflow_type], required=required))
    return tuple(columns)
