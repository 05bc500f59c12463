"""The metadata other modules read, as typed records: one small frozen dataclass per asset role.

A writer builds the record and passes ``record.to_metadata()`` to its ``MaterializeResult``
(or ``AssetMaterialization``); a reader gets it back with ``Record.from_materialization(m)``,
which is None unless ``m`` carries that record. A materialization is recognized by the role
entry its record writes (``batch_inference/role``), never by its asset key - every deployment
has its own keys (``<name>/predictions``), and tenants name their own tables.

- ``PredictionsMetadata``: a deployment's ``<name>/predictions`` (``defs/inference/assets.py``),
  read by the SLA report and run telemetry.
- ``TenantOutputMetadata``: a client job's output table (``defs/inference/client_jobs.py``),
  read by the SLA report, the job-status sensors and lake maintenance.
- ``ValidatedMetadata``: what the SLA report reads of ``<name>/validated_features``
  (``defs/validation/assets.py``); found by its key, so it needs no role entry.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import dagster as dg

from batch_inference_platform.defs.display import URI, identifier, link

ROLE_KEY = "batch_inference/role"
"""The metadata entry naming a materialization's record (``predictions``, ``tenant_output``)."""
ROW_COUNT = "dagster/row_count"
PARTITIONS = "partitions"


def _value(metadata: Mapping[str, Any], key: str) -> Any:
    """The plain value of a metadata entry (a ``MetadataValue``'s ``value``), or None."""
    entry = metadata.get(key)
    return entry.value if isinstance(entry, dg.MetadataValue) else entry


def _int(metadata: Mapping[str, Any], key: str) -> int | None:
    value = _value(metadata, key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _float(metadata: Mapping[str, Any], key: str) -> float | None:
    value = _value(metadata, key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _id(metadata: Mapping[str, Any], key: str) -> int | None:
    """A version number written as text (``identifier``) or, by older records, as an int."""
    value = _value(metadata, key)
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return _int(metadata, key)


def _str(metadata: Mapping[str, Any], key: str) -> str | None:
    value = _value(metadata, key)
    return value if isinstance(value, str) else None


def _role(metadata: Mapping[str, Any]) -> str | None:
    return _str(metadata, ROLE_KEY)


@dataclass(frozen=True)
class PartitionFigures:
    """One scored partition of a run: its rows, the Delta version that committed them, and
    how long it took."""

    rows: int
    delta_version: int | None = None
    seconds: float | None = None
    rows_per_second: float | None = None

    def to_json(self) -> dict[str, int | float]:
        values: dict[str, int | float] = {"rows": self.rows}
        if self.rows_per_second is not None:
            values["rows_per_second"] = round(self.rows_per_second)
        if self.delta_version is not None:
            values["delta_version"] = self.delta_version
        if self.seconds is not None:
            values["seconds"] = round(self.seconds, 3)
        return values

    @classmethod
    def from_json(cls, data: object) -> PartitionFigures | None:
        if not isinstance(data, Mapping):
            return None
        rows = _int(data, "rows")
        if rows is None:
            return None
        return cls(
            rows=rows,
            delta_version=_int(data, "delta_version"),
            seconds=_float(data, "seconds"),
            rows_per_second=_float(data, "rows_per_second"),
        )


@dataclass(frozen=True)
class PredictionsMetadata:
    """A materialization of a deployment's predictions: what was scored, with which model
    version, on which engine, into which table, and how fast.

    Each partition's materialization carries its own record (``rows``, ``delta_version``,
    timings of that partition); records written before that carried the run's totals and the
    partitions' figures in ``partitions`` (``rows_of`` reads either). ``partial`` marks a
    partition recorded before its run failed for other partitions."""

    ROLE: ClassVar[str] = "predictions"

    deployment: str
    rows: int
    model_name: str
    model_version: int
    output_kind: str
    delta_version: int
    engine: str | None = None
    table_uri: str | None = None
    seconds: float | None = None
    rows_per_second: float | None = None
    validated_version: int | None = None
    validated_rows: int | None = None
    model_uri: str | None = None
    partitions: Mapping[str, PartitionFigures] = field(default_factory=dict)
    partial: bool = False

    def rows_of(self, partition: str | None) -> int:
        """The rows of ``partition`` when the record has its own figures, else ``rows``."""
        figures = self.partitions.get(partition) if partition is not None else None
        return figures.rows if figures is not None else self.rows

    def to_metadata(self) -> dict[str, dg.MetadataValue]:
        values: dict[str, dg.MetadataValue] = {
            ROLE_KEY: dg.MetadataValue.text(self.ROLE),
            "deployment": dg.MetadataValue.text(self.deployment),
            ROW_COUNT: dg.MetadataValue.int(self.rows),
        }
        if self.seconds is not None:
            values["seconds"] = dg.MetadataValue.float(round(self.seconds, 3))
        if self.rows_per_second is not None:
            values["rows_per_second"] = dg.MetadataValue.float(round(self.rows_per_second, 1))
        values["delta_version"] = identifier(self.delta_version)
        if self.validated_version is not None:
            values["validated_version"] = identifier(self.validated_version)
        if self.validated_rows is not None:
            values["validated_rows"] = dg.MetadataValue.int(self.validated_rows)
        if self.table_uri is not None:
            values[URI] = dg.MetadataValue.path(self.table_uri)
        values["model_name"] = dg.MetadataValue.text(self.model_name)
        values["model_version"] = identifier(self.model_version)
        if self.model_uri is not None:
            values["model_uri"] = link(self.model_uri)
        values["output_kind"] = dg.MetadataValue.text(self.output_kind)
        if self.engine is not None:
            values["engine"] = dg.MetadataValue.text(self.engine)
        if self.partitions:
            values[PARTITIONS] = dg.MetadataValue.json(
                {key: figures.to_json() for key, figures in self.partitions.items()}
            )
        if self.partial:
            values["partial_run"] = dg.MetadataValue.bool(True)
        return values

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> PredictionsMetadata | None:
        """The record in ``metadata``; None when it carries none (or an incomplete one)."""
        if _role(metadata) != cls.ROLE:
            return None
        deployment, rows = _str(metadata, "deployment"), _int(metadata, ROW_COUNT)
        model_name, model_version = _str(metadata, "model_name"), _id(metadata, "model_version")
        output_kind, delta_version = _str(metadata, "output_kind"), _id(metadata, "delta_version")
        if (
            deployment is None
            or rows is None
            or model_name is None
            or model_version is None
            or output_kind is None
            or delta_version is None
        ):
            return None
        return cls(
            deployment=deployment,
            rows=rows,
            model_name=model_name,
            model_version=model_version,
            output_kind=output_kind,
            delta_version=delta_version,
            engine=_str(metadata, "engine"),
            table_uri=_str(metadata, URI) or _str(metadata, "table_uri"),
            seconds=_float(metadata, "seconds"),
            rows_per_second=_float(metadata, "rows_per_second"),
            validated_version=_id(metadata, "validated_version"),
            validated_rows=_int(metadata, "validated_rows"),
            model_uri=_str(metadata, "model_uri"),
            partitions=_partition_figures(_value(metadata, PARTITIONS)),
            partial=_value(metadata, "partial_run") is True,
        )

    @classmethod
    def from_materialization(
        cls, materialization: dg.AssetMaterialization
    ) -> PredictionsMetadata | None:
        return cls.from_metadata(materialization.metadata)


@dataclass(frozen=True)
class TenantOutputMetadata:
    """A materialization of a tenant's output table by a client job: the table, the
    partitions scored into it, the rows and the model version."""

    ROLE: ClassVar[str] = "tenant_output"

    job_id: str
    tenant: str
    table_uri: str
    partitions: tuple[str, ...]
    rows: int
    model_name: str
    model_version: int
    deployment: str | None = None
    """The deployment whose model or features the request used, when it named one."""

    def to_metadata(self) -> dict[str, dg.MetadataValue]:
        values: dict[str, dg.MetadataValue] = {
            ROLE_KEY: dg.MetadataValue.text(self.ROLE),
            "job_id": dg.MetadataValue.text(self.job_id),
            "tenant": dg.MetadataValue.text(self.tenant),
            "table": dg.MetadataValue.path(self.table_uri),
            PARTITIONS: dg.MetadataValue.json(list(self.partitions)),
            ROW_COUNT: dg.MetadataValue.int(self.rows),
            "model_name": dg.MetadataValue.text(self.model_name),
            "model_version": identifier(self.model_version),
        }
        if self.deployment is not None:
            values["deployment"] = dg.MetadataValue.text(self.deployment)
        return values

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> TenantOutputMetadata | None:
        if _role(metadata) != cls.ROLE:
            return None
        job_id, tenant, table = (_str(metadata, k) for k in ("job_id", "tenant", "table"))
        rows, model_version = _int(metadata, ROW_COUNT), _id(metadata, "model_version")
        model_name = _str(metadata, "model_name")
        partitions = _value(metadata, PARTITIONS)
        if (
            job_id is None
            or tenant is None
            or table is None
            or rows is None
            or model_name is None
            or model_version is None
        ):
            return None
        return cls(
            job_id=job_id,
            tenant=tenant,
            table_uri=table,
            partitions=tuple(str(p) for p in partitions) if isinstance(partitions, list) else (),
            rows=rows,
            model_name=model_name,
            model_version=model_version,
            deployment=_str(metadata, "deployment"),
        )

    @classmethod
    def from_materialization(
        cls, materialization: dg.AssetMaterialization
    ) -> TenantOutputMetadata | None:
        return cls.from_metadata(materialization.metadata)


@dataclass(frozen=True)
class ValidatedMetadata:
    """What is read of a ``<name>/validated_features`` materialization: the rows its run
    read (``rows_in``), per partition when the run covered several."""

    rows_in: int | None
    partition_rows_in: Mapping[str, int] = field(default_factory=dict)

    def rows_in_of(self, partition: str | None) -> int | None:
        """The rows ``partition`` had before validation (its own figure, else the run's)."""
        if partition is not None and partition in self.partition_rows_in:
            return self.partition_rows_in[partition]
        return self.rows_in

    @classmethod
    def from_materialization(cls, materialization: dg.AssetMaterialization) -> ValidatedMetadata:
        metadata = materialization.metadata
        partitions = _value(metadata, PARTITIONS)
        per_partition: dict[str, int] = {}
        if isinstance(partitions, Mapping):
            for key, figures in partitions.items():
                rows = _int(figures, "rows_in") if isinstance(figures, Mapping) else None
                if rows is not None:
                    per_partition[str(key)] = rows
        return cls(_int(metadata, "rows_in"), per_partition)


def _partition_figures(value: object) -> dict[str, PartitionFigures]:
    if not isinstance(value, Mapping):
        return {}
    found = {}
    for key, data in value.items():
        figures = PartitionFigures.from_json(data)
        if figures is not None:
            found[str(key)] = figures
    return found


ScoredRecord = PredictionsMetadata | TenantOutputMetadata
"""A materialization that scored rows: a deployment's predictions or a tenant's output."""


def scored_record(materialization: dg.AssetMaterialization) -> ScoredRecord | None:
    """The predictions or tenant-output record ``materialization`` carries, if any."""
    return PredictionsMetadata.from_materialization(
        materialization
    ) or TenantOutputMetadata.from_materialization(materialization)
