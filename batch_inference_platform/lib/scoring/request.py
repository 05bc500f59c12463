"""What a scoring engine is asked to do and what it reports back, as plain JSON.

The same request goes to the in-process engine, to the Spark job through Dagster Pipes
(``spark_jobs``) and to Databricks; every engine answers with one ``PartitionReport`` per
partition that committed and one ``PartitionError`` per partition that did not. Partitions are
named by their keys (``2026-11-01``, ``2026-11-01-06:00``, ``all``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from batch_inference_platform.lib.deployments.partitioning import Partitioning
from batch_inference_platform.lib.lake.azure import storage_options as azure_storage_options
from batch_inference_platform.lib.lake.tables import DeltaLocation
from batch_inference_platform.lib.scoring.outputs import OutputSpec
from batch_inference_platform.lib.scoring.stats import ScoreStats

REQUEST_EXTRA = "scoring_request"
"""The Pipes extra that carries the request to the Spark job."""


@dataclass(frozen=True)
class ModelRef:
    """A registered model version and the registry that holds it."""

    name: str
    version: int
    tracking_uri: str
    registry_uri: str


@dataclass(frozen=True)
class ScoringRequest:
    """Score partitions ``keys`` of the validated table into the prediction table with
    ``model``."""

    keys: list[str]
    """The partitions to score (``all`` for an unpartitioned deployment)."""
    identity: list[str]
    """The deployment's key columns, then its partition column: copied onto every prediction."""
    partitioning: dict[str, Any]
    """The deployment's ``Partitioning`` as JSON (``partition_spec``)."""
    validated_uri: str
    predictions_uri: str
    model: ModelRef
    feature_names: list[str]
    """The model's input columns the table has (what the engine reads)."""
    output: dict[str, Any]
    """The bound ``OutputSpec`` (kind, positive class, classes) as JSON."""
    dagster_run_id: str
    model_cache_dir: str
    commit_metadata: dict[str, dict[str, str]] = field(default_factory=dict)
    """Per partition key, what the prediction commit is stamped with (lineage)."""
    storage_options: dict[str, str] = field(default_factory=dict)
    """Non-secret delta-rs options; credentials are resolved where the request runs."""
    azure_auth: str = "none"
    """How that process finds Azure credentials in its own environment (``lib.lake.azure``)."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def location(self, uri: str) -> DeltaLocation:
        """A table of the request, with credentials from this process's environment."""
        options = azure_storage_options(self.azure_auth, self.storage_options)  # type: ignore[arg-type]
        return DeltaLocation(uri, options or None)

    @property
    def validated(self) -> DeltaLocation:
        return self.location(self.validated_uri)

    @property
    def predictions(self) -> DeltaLocation:
        return self.location(self.predictions_uri)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ScoringRequest:
        return cls(**{**data, "model": ModelRef(**data["model"])})

    @property
    def output_spec(self) -> OutputSpec:
        return OutputSpec.from_json(self.output)

    @property
    def partition_spec(self) -> Partitioning:
        return Partitioning.from_json(self.partitioning)

    @property
    def columns(self) -> list[str]:
        """What an engine reads of the validated table: identity, then model inputs."""
        return [*self.identity, *(n for n in self.feature_names if n not in self.identity)]


@dataclass(frozen=True)
class PartitionReport:
    """One committed prediction partition and how it went."""

    key: str
    input_rows: int
    rows: int
    delta_version: int
    seconds: float
    stats: ScoreStats

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "input_rows": self.input_rows,
            "rows": self.rows,
            "delta_version": self.delta_version,
            "seconds": self.seconds,
            "stats": self.stats.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PartitionReport:
        return cls(
            key=str(data["key"]),
            input_rows=int(data["input_rows"]),
            rows=int(data["rows"]),
            delta_version=int(data["delta_version"]),
            seconds=float(data["seconds"]),
            stats=ScoreStats.from_json(data["stats"]),
        )


@dataclass(frozen=True)
class PartitionError:
    """A partition that could not be scored: which, the file to blame if known, and why."""

    key: str
    error: str
    files: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "error": self.error, "files": self.files}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PartitionError:
        return cls(str(data["key"]), str(data["error"]), list(data["files"]))


@dataclass
class EngineResult:
    """Everything an engine did for one request."""

    scored: dict[str, PartitionReport] = field(default_factory=dict)
    errors: list[PartitionError] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    """Engine-specific figures for the UI (cluster id, workers, Databricks run URL...)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "scored": [report.to_json() for report in self.scored.values()],
            "errors": [error.to_json() for error in self.errors],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EngineResult:
        reports = [PartitionReport.from_json(item) for item in data.get("scored", [])]
        return cls(
            scored={report.key: report for report in reports},
            errors=[PartitionError.from_json(item) for item in data.get("errors", [])],
        )
