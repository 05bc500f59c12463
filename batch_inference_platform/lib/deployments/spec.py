"""A deployment as its ``defs.yaml`` declares it: one use case of the platform.

The YAML schema (``DeploymentSpec``) is plain pydantic, so the Dagster component, the HTTP
service and the CLI read the same files the same way; ``Deployment`` is the resolved use case
(paths made absolute, partitioning and output typed) that the rest of ``lib`` works with.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pydantic
from pydantic import BaseModel, ConfigDict, Field

from batch_inference_platform.lib.deployments.partitioning import PartitionKind, Partitioning
from batch_inference_platform.lib.features.contract import Column, Contract, Kind
from batch_inference_platform.lib.scoring.outputs import OutputKind, OutputSpec

NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PartitionSpec(_Strict):
    """How the source table is partitioned."""

    column: str | None = Field(default=None, description="The partition column (not for none).")
    kind: PartitionKind = Field(default=PartitionKind.DAILY, description="daily | hourly | none")
    start: str | None = Field(
        default=None, description="First partition: YYYY-MM-DD (daily) or YYYY-MM-DD-HH:MM."
    )

    @pydantic.model_validator(mode="after")
    def _column_matches_kind(self) -> PartitionSpec:
        if self.kind is PartitionKind.NONE and self.column is not None:
            raise ValueError("kind none takes no column")
        if self.kind is not PartitionKind.NONE:
            if self.column is None:
                raise ValueError(f"kind {self.kind.value} needs a column")
            if self.start is None:
                raise ValueError(f"kind {self.kind.value} needs a start")
            _start(self.kind, self.start)
        return self


class SourceSpec(_Strict):
    """The Delta table the deployment scores."""

    table: str = Field(
        min_length=1,
        description="A Delta table: a path relative to the project root, az:// or abfss://.",
    )
    key: list[str] = Field(min_length=1, description="Columns that identify a row, any type.")
    partition: PartitionSpec = Field(default_factory=PartitionSpec)
    generator: Literal["credit_risk", "churn"] | None = Field(
        default=None,
        description="Locally only: the demo generator that writes this table (make demo).",
    )


class ColumnSpec(_Strict):
    """One contract column."""

    name: str = Field(min_length=1)
    type: Literal["integer", "float", "string", "date"]
    required: bool = False
    min: float | None = None
    max: float | None = None
    categories: list[str] = Field(default_factory=list)
    max_null_rate: float | None = Field(default=None, ge=0, le=1)

    def column(self) -> Column:
        return Column(
            self.name,
            Kind(self.type),
            required=self.required,
            min_value=self.min,
            max_value=self.max,
            categories=tuple(self.categories),
            max_null_rate=self.max_null_rate,
        )


class ContractSpec(_Strict):
    """The feature columns validated partitions must hold (keys and partition excluded)."""

    columns: list[ColumnSpec] = Field(min_length=1)


class ModelSpec(_Strict):
    """The registered model and the alias that names its serving version."""

    name: str = Field(min_length=1)
    alias: str = Field(default="champion", min_length=1)


class OutputSpecYaml(_Strict):
    """What the model's output means and where predictions are written."""

    kind: OutputKind
    positive_class: str = Field(default="1", description="For probability: the positive class.")
    table: str | None = Field(
        default=None, description="The prediction table; default <lake root>/predictions/<name>."
    )


class ChecksSpec(_Strict):
    """Per-deployment overrides of application.yml's validation and drift thresholds."""

    min_rows: int | None = Field(default=None, ge=0)
    max_null_rate: float | None = Field(default=None, ge=0, le=1)
    max_quarantine_rate: float | None = Field(default=None, ge=0, le=1)
    max_duplicate_rate: float | None = Field(default=None, ge=0, le=1)
    psi_threshold: float | None = Field(default=None, gt=0)
    drift_bins: int | None = Field(default=None, ge=2)


class DeploymentSpec(_Strict):
    """The attributes of a ``defs.yaml`` of type ScoringDeployment."""

    name: str = Field(pattern=NAME_PATTERN, description="Asset key prefix and group.")
    description: str | None = None
    source: SourceSpec
    contract: ContractSpec | None = Field(
        default=None, description="Without it, the model signature's inputs are the contract."
    )
    model: ModelSpec
    output: OutputSpecYaml
    engine: Literal["local", "spark", "databricks"] | None = Field(
        default=None, description="Default: batch-inference.engine of application.yml."
    )
    schedule: str | None = Field(default=None, description="Quartz cron; none: no schedule.")
    checks: ChecksSpec = Field(default_factory=ChecksSpec)
    rescore_partitions: int | None = Field(
        default=None, ge=1, description="Recent partitions re-scored when the alias moves."
    )

    def resolve(self, project_root: Path) -> Deployment:
        """The deployment with paths made absolute and partitioning typed."""
        partition = self.source.partition
        partitioning = Partitioning(
            partition.kind,
            partition.column,
            _start(partition.kind, partition.start) if partition.start else None,
        )
        return Deployment(
            name=self.name,
            description=self.description or "",
            source_uri=resolve_table(self.source.table, project_root),
            key=tuple(self.source.key),
            partitioning=partitioning,
            columns=tuple(c.column() for c in self.contract.columns) if self.contract else None,
            model_name=self.model.name,
            alias=self.model.alias,
            output=OutputSpec(self.output.kind, self.output.positive_class),
            predictions_uri=(
                resolve_table(self.output.table, project_root) if self.output.table else None
            ),
            engine=self.engine,
            schedule=self.schedule,
            checks={k: v for k, v in self.checks.model_dump().items() if v is not None},
            rescore_partitions=self.rescore_partitions,
            generator=self.source.generator,
        )


@dataclass(frozen=True)
class Deployment:
    """One use case: a feature table, its contract, a model alias, an output kind."""

    name: str
    source_uri: str
    key: tuple[str, ...]
    partitioning: Partitioning
    columns: tuple[Column, ...] | None
    """The declared feature columns; None: the serving model's signature inputs."""
    model_name: str
    alias: str
    output: OutputSpec
    description: str = ""
    predictions_uri: str | None = None
    """None: ``<lake root>/predictions/<name>``."""
    engine: str | None = None
    schedule: str | None = None
    checks: dict[str, float | int] = field(default_factory=dict)
    rescore_partitions: int | None = None
    generator: str | None = None

    @property
    def identity(self) -> list[str]:
        """Key and partition columns: what every derived row carries."""
        return [*self.key, *self.partitioning.columns]

    def contract(
        self, source_schema: pa.Schema, columns: tuple[Column, ...] | None = None
    ) -> Contract:
        """The contract with key types taken from the source table (keys keep their family);
        ``columns`` (the model signature's inputs) stand in when none were declared."""
        features = self.columns if self.columns is not None else columns
        if features is None:
            raise ValueError(f"deployment {self.name}: no contract declared and no signature given")
        key = []
        for name in self.key:
            index = source_schema.get_field_index(name)
            if index < 0:
                raise ValueError(f"deployment {self.name}: key column {name!r} not in the source")
            key.append(Column(name, Kind.of_type(source_schema.field(index).type), required=True))
        return Contract(tuple(key), self.partitioning, features)


def resolve_table(table: str, project_root: Path) -> str:
    """A table URI: remote URIs as they are, paths relative to the project root."""
    if re.match(r"^[a-z][a-z0-9+.-]*://", table):
        return table
    path = Path(table)
    return str(path if path.is_absolute() else (project_root / path).resolve())


def _start(kind: PartitionKind, value: str) -> dt.datetime:
    """The first partition, parsed strictly for its kind."""
    try:
        if kind is PartitionKind.HOURLY:
            return dt.datetime.strptime(value, "%Y-%m-%d-%H:%M").replace(tzinfo=dt.UTC)
        return dt.datetime.combine(dt.date.fromisoformat(value), dt.time(), dt.UTC)
    except ValueError:
        shape = "YYYY-MM-DD-HH:MM" if kind is PartitionKind.HOURLY else "YYYY-MM-DD"
        raise ValueError(f"start {value!r} is not a {shape}") from None
