"""The JSON messages on the platform's topics, versioned by ``schema_version``.

A consumer decodes with ``decode``, which refuses anything it does not understand - invalid
JSON, another schema version, a missing, extra or mistyped field - with a ``MessageSchemaError``
whose text says what is wrong. Timestamps are timezone-aware and normalized to UTC.

Versions: requests and outputs are at 2 (they name the deployment: ``deployment``, and a
request's days are optional for an unpartitioned one); status and error messages are at 1.
``decode_request`` also reads a version-1 request (stored or in flight before the upgrade) as
one for ``LEGACY_DEPLOYMENT``, the platform's only use case then.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

Priority = Literal["normal", "high", "urgent"]
JobStatus = Literal["accepted", "queued", "started", "succeeded", "failed", "canceled"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"succeeded", "failed", "canceled"})
"""A job in one of these statuses never changes again."""

UtcDatetime = Annotated[AwareDatetime, AfterValidator(lambda value: value.astimezone(dt.UTC))]
"""A timezone-aware timestamp, converted to UTC (naive timestamps are refused)."""

NonEmpty = Annotated[str, Field(min_length=1)]


class MessageSchemaError(ValueError):
    """Bytes that are not a valid message of the expected kind and schema version."""


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InferenceRequestMessage(_Message):
    """A client's request, accepted by the API: score ``feature_table`` of ``deployment``'s
    partitions over a date range (no dates: an unpartitioned deployment's whole table) with
    ``model``, the deployment's registered model."""

    schema_version: Literal[2] = 2
    job_id: NonEmpty
    tenant: NonEmpty
    deployment: NonEmpty = Field(description="A declared deployment the tenant may use.")
    model: NonEmpty = Field(description="'name@alias' or 'name/version' of its model.")
    feature_table: NonEmpty = Field(description="A table the tenant may read.")
    start_date: dt.date | None
    end_date: dt.date | None
    priority: Priority
    output_table: NonEmpty
    submitted_at: UtcDatetime

    @model_validator(mode="after")
    def _range(self) -> InferenceRequestMessage:
        if (self.start_date is None) != (self.end_date is None):
            raise ValueError("start_date and end_date are both set or both null")
        if self.start_date and self.end_date and self.end_date < self.start_date:
            raise ValueError(f"end_date {self.end_date} is before start_date {self.start_date}")
        return self


LEGACY_DEPLOYMENT = "credit_risk"
"""The deployment a version-1 request (before deployments were named) was for."""


class StatusMessage(_Message):
    """A client job entered ``status`` at ``at``."""

    schema_version: Literal[1] = 1
    job_id: NonEmpty
    tenant: NonEmpty
    status: JobStatus
    at: UtcDatetime
    dagster_run_id: str | None = None
    detail: str | None = None


class OutputMessage(_Message):
    """A client job succeeded: where its predictions are and what produced them (the
    deployment and its model version)."""

    schema_version: Literal[2] = 2
    job_id: NonEmpty
    tenant: NonEmpty
    deployment: NonEmpty
    table: NonEmpty
    partitions: list[str]
    rows: int = Field(ge=0)
    model_name: NonEmpty
    model_version: int = Field(ge=1)
    dagster_run_id: NonEmpty
    finished_at: UtcDatetime


class ErrorMessage(_Message):
    """A client job failed: the error, the step it failed in, and the run's metrics."""

    schema_version: Literal[1] = 1
    job_id: NonEmpty
    tenant: NonEmpty
    dagster_run_id: str | None
    error: str
    failed_step: str | None
    metrics: dict[str, float]
    at: UtcDatetime


M = TypeVar("M", bound=BaseModel)


def encode(message: BaseModel) -> bytes:
    """Compact UTF-8 JSON of ``message`` (``schema_version`` included)."""
    return message.model_dump_json().encode("utf-8")


def decode(kind: type[M], data: bytes) -> M:
    """``data`` as a ``kind`` message; ``MessageSchemaError`` saying what is wrong otherwise."""
    name = kind.__name__
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise MessageSchemaError(f"{name}: invalid JSON: {error}") from None
    if not isinstance(raw, dict):
        raise MessageSchemaError(f"{name}: expected a JSON object, got {type(raw).__name__}")
    field = kind.model_fields.get("schema_version")
    supported = field.default if field is not None else None
    if "schema_version" not in raw:
        raise MessageSchemaError(f"{name}: schema_version is missing (supported: {supported})")
    version = raw["schema_version"]
    if type(version) is not int or version != supported:
        raise MessageSchemaError(
            f"{name}: unsupported schema_version {version!r} (supported: {supported})"
        )
    try:
        return kind.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(_describe(e) for e in error.errors(include_url=False))
        raise MessageSchemaError(f"{name}: {problems}") from None


def decode_request(data: bytes) -> InferenceRequestMessage:
    """``data`` as a request: version 2, or a version-1 request read as one for
    ``LEGACY_DEPLOYMENT`` (otherwise as it was); ``MessageSchemaError`` as ``decode``."""
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raw = None
    version = raw.get("schema_version") if isinstance(raw, dict) else None
    if type(version) is int and version == 1 and isinstance(raw, dict):
        upgraded = {**raw, "schema_version": 2, "deployment": LEGACY_DEPLOYMENT}
        data = json.dumps(upgraded).encode("utf-8")
    return decode(InferenceRequestMessage, data)


def _describe(error: Any) -> str:
    where = ".".join(str(part) for part in error["loc"]) or "message"
    if error["type"] == "missing":
        return f"{where}: required field is missing"
    if error["type"] == "extra_forbidden":
        return f"{where}: unknown field"
    if error["type"] == "value_error":
        return f"{where}: {error['ctx']['error']}" if "ctx" in error else f"{where}: {error['msg']}"
    shown = repr(error["input"])
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return f"{where}: {error['msg']} (got {shown})"
