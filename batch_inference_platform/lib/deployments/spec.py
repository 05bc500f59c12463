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

from batch_inference_platform.lib.deployments.partitioning import Partitioning, PartitionKind
from batch_inference_platform.lib.features.contract import Column, Contract, Kind
from batch_inference_platform.lib.scoring.outputs import OutputKind, OutputSpec

NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
_OWNER_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Z|a-z]{2,7}\b")
"""Dagster's test of an owner's email address (``dagster._core.utils.is_valid_email``)."""


def check_owners(owners: list[str]) -> list[str]:
    """Owners as Dagster takes them: each an email address or ``team:<name>``, once each."""
    for owner in owners:
        if not (_OWNER_EMAIL.fullmatch(owner) or (owner.startswith("team:") and len(owner) > 5)):
            raise ValueError(
                f"owner {owner!r} is neither an email address nor a team (team:<name>)"
            )
    repeated = sorted({owner for owner in owners if owners.count(owner) > 1})
    if repeated:
        raise ValueError(f"owners named more than once: {', '.join(repeated)}")
    return owners


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
        description="A Delta table: lake://<path> (under batch-inference.lake.root, so one YAML "
        "serves every environment), a path relative to the project root, az:// or abfss://."
    )
    key: list[str] = Field(description="Columns that identify a row (one or more), any type.")
    partition: PartitionSpec = Field(default_factory=PartitionSpec)
    generator: Literal["credit_risk", "churn"] | None = Field(
        default=None,
        description="Locally only: the demo generator that writes this table (make demo).",
    )

    @pydantic.model_validator(mode="after")
    def _named(self) -> SourceSpec:
        if not self.table.strip():
            raise ValueError("table is empty")
        if not self.key or any(not name.strip() for name in self.key):
            raise ValueError("key needs one or more column names")
        if len(set(self.key)) != len(self.key):
            raise ValueError(f"key names a column more than once: {self.key}")
        if self.partition.column in self.key:
            raise ValueError(f"the partition column {self.partition.column!r} is also a key")
        return self


class ColumnSpec(_Strict):
    """One contract column."""

    name: str
    type: Literal["integer", "float", "string", "date"]
    required: bool = False
    min: float | None = None
    max: float | None = None
    categories: list[str] = Field(default_factory=list)
    max_null_rate: float | None = None

    @pydantic.field_validator("max_null_rate")
    @classmethod
    def _rate(cls, value: float | None) -> float | None:
        if value is not None and not 0 <= value <= 1:
            raise ValueError(f"must lie in [0, 1], got {value}")
        return value

    @pydantic.model_validator(mode="after")
    def _bounds(self) -> ColumnSpec:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min:g} is above max {self.max:g}")
        if (self.min is not None or self.max is not None) and self.type not in ("integer", "float"):
            raise ValueError(f"min/max apply to integer and float columns, not {self.type}")
        if self.categories and self.type != "string":
            raise ValueError(f"categories apply to string columns, not {self.type}")
        return self

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

    columns: list[ColumnSpec]

    @pydantic.field_validator("columns")
    @classmethod
    def _some(cls, columns: list[ColumnSpec]) -> list[ColumnSpec]:
        if not columns:
            raise ValueError("a contract needs one or more columns (or leave contract out)")
        names = [c.name for c in columns]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"columns named more than once: {', '.join(repeated)}")
        return columns


class ModelSpec(_Strict):
    """The registered model and the alias that names its serving version."""

    name: str
    alias: str = "champion"


class OutputSpecYaml(_Strict):
    """What the model's output means and where predictions are written."""

    kind: OutputKind
    positive_class: str = Field(default="1", description="For probability: the positive class.")
    table: str | None = Field(
        default=None, description="The prediction table; default <lake root>/predictions/<name>."
    )


class ChecksSpec(_Strict):
    """Per-deployment overrides of application.yml's validation and drift thresholds."""

    min_rows: int | None = None
    max_null_rate: float | None = None
    max_quarantine_rate: float | None = None
    max_duplicate_rate: float | None = None
    psi_threshold: float | None = None
    drift_bins: int | None = None

    @pydantic.model_validator(mode="after")
    def _in_range(self) -> ChecksSpec:
        for name in ("max_null_rate", "max_quarantine_rate", "max_duplicate_rate"):
            value = getattr(self, name)
            if value is not None and not 0 <= value <= 1:
                raise ValueError(f"{name} must lie in [0, 1], got {value}")
        if self.min_rows is not None and self.min_rows < 0:
            raise ValueError(f"min_rows must be >= 0, got {self.min_rows}")
        if self.psi_threshold is not None and self.psi_threshold <= 0:
            raise ValueError(f"psi_threshold must be > 0, got {self.psi_threshold}")
        if self.drift_bins is not None and self.drift_bins < 2:
            raise ValueError(f"drift_bins must be >= 2, got {self.drift_bins}")
        return self


class DeploymentSpec(_Strict):
    """The attributes of a ``defs.yaml`` of type ScoringDeployment."""

    name: str = Field(description="Asset key prefix and group: lower case, digits, _.")
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
        default=None, description="Recent partitions re-scored when the alias moves (>= 1)."
    )
    owners: list[str] | None = Field(
        default=None,
        description="Who answers for the deployment's assets: email addresses or team:<name>; "
        "default: batch-inference.owners of application.yml.",
    )

    @pydantic.field_validator("owners")
    @classmethod
    def _owners(cls, owners: list[str] | None) -> list[str] | None:
        return None if owners is None else check_owners(owners)

    @pydantic.field_validator("name")
    @classmethod
    def _name_is_a_key(cls, name: str) -> str:
        if not re.match(NAME_PATTERN, name):
            raise ValueError(
                f"{name!r} is not a deployment name: lower case letters, digits and _, "
                "starting with a letter (it becomes an asset key prefix and a table name)"
            )
        return name

    @pydantic.field_validator("rescore_partitions")
    @classmethod
    def _positive(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise ValueError(f"must be >= 1, got {value}")
        return value

    def resolve(self, project_root: Path, lake_root: str | None = None) -> Deployment:
        """The deployment with tables located (``lake://`` under ``lake_root``, paths under
        ``project_root``) and partitioning typed."""
        partition = self.source.partition
        partitioning = Partitioning(
            partition.kind,
            partition.column,
            _start(partition.kind, partition.start) if partition.start else None,
        )
        return Deployment(
            name=self.name,
            description=self.description or "",
            source_uri=resolve_table(self.source.table, project_root, lake_root),
            key=tuple(self.source.key),
            partitioning=partitioning,
            columns=tuple(c.column() for c in self.contract.columns) if self.contract else None,
            model_name=self.model.name,
            alias=self.model.alias,
            output=OutputSpec(self.output.kind, self.output.positive_class),
            predictions_uri=(
                resolve_table(self.output.table, project_root, lake_root)
                if self.output.table
                else None
            ),
            engine=self.engine,
            schedule=self.schedule,
            checks={k: v for k, v in self.checks.model_dump().items() if v is not None},
            rescore_partitions=self.rescore_partitions,
            generator=self.source.generator,
            owners=tuple(self.owners) if self.owners is not None else None,
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
    owners: tuple[str, ...] | None = None
    """None: the platform's owners (``batch-inference.owners``)."""

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


LAKE_SCHEME = "lake://"
"""A table under the lake root of the environment (``lake://features/credit_risk``)."""


def resolve_table(table: str, project_root: Path, lake_root: str | None = None) -> str:
    """A table URI: ``lake://`` paths under the lake root, remote URIs as they are, other
    paths relative to the project root."""
    if table.startswith(LAKE_SCHEME):
        if lake_root is None:
            raise ValueError(f"{table}: a lake:// table needs the lake root")
        return f"{lake_root.rstrip('/')}/{table.removeprefix(LAKE_SCHEME).strip('/')}"
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
