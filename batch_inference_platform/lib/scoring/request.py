"""What a scoring engine is asked to do and what it reports back, as plain JSON.

The same request goes to the in-process engine, to the Spark job through Dagster Pipes
(``spark_jobs``) and to Databricks; every engine answers with one ``PartitionReport`` per day
that committed and one ``PartitionError`` per day that did not.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any

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
    """Score ``days`` of the validated table into the prediction table with ``model``."""

    days: list[str]
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
    """Per day, what the prediction commit is stamped with (lineage)."""
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
    def dates(self) -> list[dt.date]:
        return [dt.date.fromisoformat(day) for day in self.days]


@dataclass(frozen=True)
class PartitionReport:
    """One committed prediction partition and how it went."""

    day: dt.date
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
            "day": self.day.isoformat(),
            "input_rows": self.input_rows,
            "rows": self.rows,
            "delta_version": self.delta_version,
            "seconds": self.seconds,
            "stats": self.stats.to_json(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PartitionReport:
        return cls(
            day=dt.date.fromisoformat(data["day"]),
            input_rows=int(data["input_rows"]),
            rows=int(data["rows"]),
            delta_version=int(data["delta_version"]),
            seconds=float(data["seconds"]),
            stats=ScoreStats.from_json(data["stats"]),
        )


@dataclass(frozen=True)
class PartitionError:
    """A partition that could not be scored: which, the file to blame if known, and why."""

    day: dt.date
    error: str
    files: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"day": self.day.isoformat(), "error": self.error, "files": self.files}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PartitionError:
        return cls(dt.date.fromisoformat(data["day"]), str(data["error"]), list(data["files"]))


@dataclass
class EngineResult:
    """Everything an engine did for one request."""

    scored: dict[dt.date, PartitionReport] = field(default_factory=dict)
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
            scored={report.day: report for report in reports},
            errors=[PartitionError.from_json(item) for item in data.get("errors", [])],
        )
