"""The JSON messages on the platform's topics, versioned by ``schema_version``.

A consumer decodes with ``decode``, which refuses anything it does not understand - invalid
JSON, another schema version, a missing, extra or mistyped field - with a ``MessageSchemaError``
whose text says what is wrong. Timestamps are timezone-aware and normalized to UTC.
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

    schema_version: Literal[1] = 1


class InferenceRequestMessage(_Message):
    """A client's request, accepted by the API: score ``feature_table`` over a date range."""

    job_id: NonEmpty
    tenant: NonEmpty
    model: NonEmpty = Field(description="'name@alias' or 'name/version'.")
    feature_table: NonEmpty = Field(description="A table the tenant may read.")
    start_date: dt.date
    end_date: dt.date
    priority: Priority
    output_table: NonEmpty
    submitted_at: UtcDatetime

    @model_validator(mode="after")
    def _range(self) -> InferenceRequestMessage:
        if self.end_date < self.start_date:
            raise ValueError(f"end_date {self.end_date} is before start_date {self.start_date}")
        return self


class StatusMessage(_Message):
    """A client job entered ``status`` at ``at``."""

    job_id: NonEmpty
    tenant: NonEmpty
    status: JobStatus
    at: UtcDatetime
    dagster_run_id: str | None = None
    detail: str | None = None


class OutputMessage(_Message):
    """A client job succeeded: where its predictions are and what produced them."""

    job_id: NonEmpty
    tenant: NonEmpty
    table: NonEmpty
    partitions: list[str]
    rows: int = Field(ge=0)
    model_name: NonEmpty
    model_version: int = Field(ge=1)
    dagster_run_id: NonEmpty
    finished_at: UtcDatetime


class ErrorMessage(_Message):
    """A client job failed: the error, the step it failed in, and the run's metrics."""

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
