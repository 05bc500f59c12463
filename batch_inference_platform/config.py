"""Typed platform settings loaded from application.yml and monitoring.yml.

Any key can be overridden by an environment variable named ``BIP__`` + the key path, segments
upper-cased with ``-`` as ``_`` and joined by ``__``, e.g. ``BIP__METRICS__COLLECTION_INTERVAL=10s``
or ``BIP__BATCH_INFERENCE__SPARK__CLUSTER__MAX_WORKERS=8`` (values are parsed as YAML scalars).
Every problem surfaces as a ``SettingsError`` naming the file and the dotted key.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from batch_inference_platform.lib.deployments.spec import check_owners
from batch_inference_platform.lib.messaging.settings import KafkaConfig
from batch_inference_platform.lib.messaging.topics import Topics
from batch_inference_platform.lib.quartz import quartz_to_cron

__all__ = ["Settings", "SettingsError", "load_settings", "quartz_to_cron"]

ENV_PREFIX = "BIP__"
_ROOT = Path(__file__).resolve().parents[1]
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")  # 2+ chars, so "C:" is not a scheme


class SettingsError(ValueError):
    """Invalid or missing platform configuration."""


# --------------------------------------------------------------------------- value parsers


def _parse_duration(value: Any) -> dt.timedelta:
    """'30s', '5m', '1h'/'1hour', '30d', '2w' -> positive timedelta."""
    if isinstance(value, dt.timedelta):
        return value
    units = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
    match = re.fullmatch(
        r"\s*(\d+(?:\.\d+)?)\s*(s|secs?|seconds?|m|mins?|minutes?|h|hrs?|hours?|d|days?|w|weeks?)\s*",
        str(value),
        re.IGNORECASE,
    )
    if match is None or float(match[1]) <= 0:
        raise ValueError(f"cannot parse duration {value!r} (use e.g. 30s, 5m, 1h, 30d)")
    return dt.timedelta(**{units[match[2][0].lower()]: float(match[1])})


def _parse_percentage(value: Any) -> float:
    """'80%' or '< 0.1%' -> fraction; a bare number must already be a fraction in [0, 1]."""
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1:
        return float(value)
    match = re.fullmatch(r"\s*(?:<=?\s*)?(\d+(?:\.\d+)?)\s*%\s*", str(value))
    if match is None:
        raise ValueError(f"cannot parse percentage {value!r} (use e.g. '80%' or a fraction 0-1)")
    return float(match[1]) / 100


def _parse_throughput(value: Any) -> float:
    """'1M records/hour' (K/M/B suffix; per hour/min/s) -> records per hour."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    match = re.fullmatch(
        r"\s*(\d+(?:\.\d+)?)\s*([KMB]?)\s*(?:records?|rows?)?\s*/\s*(hours?|hr|h|min(?:utes?)?|m"
        r"|s(?:ec(?:onds?)?)?)\s*",
        str(value),
        re.IGNORECASE,
    )
    if match is None or float(match[1]) <= 0:
        raise ValueError(f"cannot parse throughput {value!r} (use e.g. '1M records/hour')")
    scale = {"": 1, "K": 1e3, "M": 1e6, "B": 1e9}[match[2].upper()]
    per_hour = {"h": 1, "m": 60, "s": 3600}[match[3][0].lower()]
    return float(match[1]) * scale * per_hour


def _parse_job_completion(value: Any) -> Any:
    """'90% < 1hour' -> {'quantile': '90%', 'within': '1hour'}; mappings pass through."""
    if not isinstance(value, str):
        return value
    match = re.fullmatch(r"\s*([^<]+?)\s*<=?\s*(.+?)\s*", value)
    if match is None:
        raise ValueError(f"cannot parse job-completion target {value!r} (use e.g. '90% < 1hour')")
    return {"quantile": match[1], "within": match[2]}


def _split_list(value: Any) -> Any:
    """'slack, email' -> ['slack', 'email']."""
    return [p.strip() for p in value.split(",") if p.strip()] if isinstance(value, str) else value


def _stringify_options(value: Any) -> Any:
    """delta-rs storage options are strings; YAML booleans become 'true'/'false'."""
    if not isinstance(value, dict):
        return value
    return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in value.items()}


Duration = Annotated[
    dt.timedelta,
    BeforeValidator(_parse_duration),
    PlainSerializer(lambda value: f"{value.total_seconds():g}s", when_used="json"),
]
Fraction = Annotated[float, BeforeValidator(_parse_percentage), Field(ge=0, le=1)]


# --------------------------------------------------------------------------- models


class _Section(BaseModel):
    model_config = ConfigDict(
        alias_generator=lambda name: name.replace("_", "-"),
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )


class ClusterSettings(_Section):
    """Spark cluster sizing used by the spark/databricks scoring engines."""

    min_workers: int = Field(ge=1, description="Workers kept when the cluster scales down.")
    max_workers: int = Field(ge=1, description="Upper bound on workers (cost ceiling).")
    auto_scale: bool = Field(description="Let the cluster scale between min and max workers.")
    node_type: str = Field(min_length=1, description="Cloud VM type of each worker.")

    @model_validator(mode="after")
    def _min_le_max(self) -> ClusterSettings:
        if self.min_workers > self.max_workers:
            raise PydanticCustomError(
                "cross_field",
                "must be <= max-workers ({lo} > {hi})",
                {"field": "min-workers", "lo": self.min_workers, "hi": self.max_workers},
            )
        return self


class SparkSettings(_Section):
    """Spark engine settings."""

    connect_url: str = Field(
        default="",
        description="Spark Connect URL for engine 'spark' (sc://host:port); empty: the job "
        "starts an embedded Sail engine.",
    )
    cluster: ClusterSettings


class KafkaTopics(_Section):
    """The seed's topics."""

    input: str = Field(min_length=1, description="Accepted client requests.")
    output: str = Field(min_length=1, description="Results: table, partitions, rows, model.")
    status: str = Field(min_length=1, description="Every status change of a client job.")
    errors: str = Field(min_length=1, description="Error details and metrics of failed jobs.")


class KafkaSettings(_Section):
    """The Kafka cluster (or Event Hubs' Kafka endpoint), its topics and producer tuning."""

    bootstrap_servers: str = Field(
        description="host:port[,host:port]; empty: client requests are kept in the outbox "
        "until a broker is configured."
    )
    client_config: dict[str, str] = Field(
        description="Extra librdkafka settings (security.protocol, sasl.mechanism, ...)."
    )
    sasl_password_env: str = Field(
        description="Environment variable holding sasl.password (e.g. an Event Hubs "
        "connection string); empty: none."
    )
    topics: KafkaTopics
    batch_size: int = Field(gt=0, description="Max bytes per producer batch.")
    linger_ms: int = Field(ge=0, description="Wait time to fill a batch before sending.")
    buffer_memory: int = Field(gt=0, description="Producer send-buffer size in bytes.")

    def as_config(self) -> KafkaConfig:
        """These settings as the Kafka client takes them."""
        t = self.topics
        return KafkaConfig(
            bootstrap_servers=self.bootstrap_servers,
            topics=Topics(input=t.input, output=t.output, status=t.status, errors=t.errors),
            batch_size=self.batch_size,
            linger_ms=self.linger_ms,
            buffer_memory=self.buffer_memory,
            client_config=dict(self.client_config),
            sasl_password_env=self.sasl_password_env,
        )


class RealtimeTopics(_Section):
    """Topics of the real-time integration (events in, insights and dead letters out)."""

    journey_events: str = Field(min_length=1)
    transactions: str = Field(min_length=1)
    credit_decisions: str = Field(min_length=1)
    insights: str = Field(min_length=1)
    dead_letter: str = Field(min_length=1)


class RealtimeSettings(_Section):
    """Event aggregation, batch insights and the Redis cache of recommendations."""

    topics: RealtimeTopics
    window: Duration = Field(description="Tumbling window length (hourly by default).")
    grace: Duration = Field(description="Late events within this still land in their window.")
    max_batch_messages: int = Field(gt=0, description="Events read per run at most.")
    schedule: str = Field(description="Quartz expression of the aggregation schedule.")
    redis_url: str = Field(min_length=1, description="Redis URL (password via REDIS_PASSWORD).")
    redis_prefix: str = Field(min_length=1, description="Key prefix of the cache.")
    cache_ttl: Duration = Field(description="How long precomputed recommendations live.")
    deployment: str = Field(
        default="credit_risk",
        description="The deployment whose serving model scores each active customer's risk "
        "(a probability keyed by the customer id of the events); empty: no insights.",
    )

    @field_validator("schedule")
    @classmethod
    def _quartz(cls, value: str) -> str:
        quartz_to_cron(value)
        return value

    @property
    def cron(self) -> str:
        return quartz_to_cron(self.schedule)


class SchedulingSettings(_Section):
    """When scoring jobs run and how many may run at once."""

    default_schedule: str = Field(description="Quartz expression for the default job schedule.")
    max_concurrent_jobs: int = Field(gt=0, description="Cap on simultaneously running jobs.")

    @field_validator("default_schedule")
    @classmethod
    def _valid_quartz(cls, value: str) -> str:
        quartz_to_cron(value)
        return value

    @property
    def cron(self) -> str:
        """The default schedule as a 5-field cron string for Dagster's ``cron_schedule``."""
        return quartz_to_cron(self.default_schedule)


def _parse_retention(value: Any) -> dt.timedelta:
    """A duration, or zero ('0', '0h'): VACUUM deletes unreferenced files of any age."""
    if re.fullmatch(r"\s*0+(?:\.0*)?\s*[a-zA-Z]*\s*", str(value)):
        return dt.timedelta(0)
    return _parse_duration(value)


class MaintenanceSettings(_Section):
    """Lake maintenance: every platform table compacted and vacuumed on a schedule."""

    schedule: str = Field(
        default="0 30 3 * * ?", description="Quartz expression of the maintenance run."
    )
    vacuum_retention: Annotated[
        dt.timedelta,
        BeforeValidator(_parse_retention),
        PlainSerializer(lambda value: f"{value.total_seconds():g}s", when_used="json"),
    ] = Field(
        default=dt.timedelta(days=7),
        description="VACUUM deletes the files of replaced partitions once replaced longer "
        "than this, and files no commit references (left by killed or conflicting writers) "
        "once older than this. Keep it longer than the longest run: a writer's files are "
        "unreferenced until it commits, and a reader may still read an older version.",
    )

    @field_validator("schedule")
    @classmethod
    def _quartz(cls, value: str) -> str:
        quartz_to_cron(value)
        return value

    @property
    def cron(self) -> str:
        return quartz_to_cron(self.schedule)

    @property
    def retention_hours(self) -> int:
        """The retention in whole hours (as delta-rs takes it), rounded up."""
        return math.ceil(self.vacuum_retention.total_seconds() / 3600)


class LakeSettings(_Section):
    """Where the Delta tables (features, predictions, quarantine) live."""

    root: str = Field(min_length=1, description="Local path or az:// / abfss:// URI.")
    storage_options: Annotated[dict[str, str], BeforeValidator(_stringify_options)] = Field(
        default_factory=dict, description="Passed to delta-rs (no secrets: see azure-auth)."
    )
    azure_auth: Literal["none", "account-key", "sas", "service-principal", "default-credential"] = (
        Field(default="none", description="Where Azure credentials come from (environment).")
    )
    archive_root: str = Field(
        default="", description="Where processed input is archived; empty: <root>/archive."
    )
    archive_retention: Duration = Field(description="Archived partitions older than this go.")


class MlflowSettings(_Section):
    """MLflow tracking server and model registry."""

    tracking_uri: str = Field(min_length=1, description="Where runs and metrics are recorded.")
    registry_uri: str = Field(default="", description="Model registry; empty = tracking URI.")
    artifact_root: str = Field(min_length=1, description="Where run artifacts are stored.")
    experiment: str = Field(min_length=1, description="Experiment that scoring runs log to.")
    ui_url: str = Field(
        default="",
        pattern=r"^(https?://\S+)?$",
        description="The MLflow UI people open (an http(s) URL), for links to model versions "
        "and runs in the Dagster UI; empty = the tracking URI when it is http(s), else no links.",
    )

    @property
    def effective_registry_uri(self) -> str:
        """Registry URI actually used: registry-uri, else tracking-uri."""
        return self.registry_uri or self.tracking_uri


class ModelSettings(_Section):
    """How every deployment's models are served (each deployment names its own model)."""

    rescore_partitions: int = Field(
        ge=1,
        description="Most recent partitions re-scored when an alias moves (a deployment's "
        "rescore_partitions overrides it).",
    )
    max_load_seconds: float = Field(
        gt=0, description="A version that takes longer to load is refused before it serves."
    )


class ValidationSettings(_Section):
    """Data-quality gates a batch must pass before its predictions are published."""

    min_rows: int = Field(ge=0, description="Smallest batch worth scoring.")
    max_null_rate: float = Field(ge=0, le=1, description="Max null share per feature column.")
    max_quarantine_rate: float = Field(ge=0, le=1, description="Max share of rows quarantined.")
    max_duplicate_rate: float = Field(ge=0, le=1, description="Max share of duplicate keys.")


class DriftSettings(_Section):
    """Feature drift detection against the training baseline."""

    psi_threshold: float = Field(gt=0, description="PSI above which a feature has drifted.")
    bins: int = Field(ge=2, description="Histogram bins used to compute PSI.")


class ApiSettings(_Section):
    """The HTTP service (client requests, webhook receivers) and its durable stores."""

    host: str = Field(min_length=1, description="Interface to listen on.")
    port: int = Field(ge=1, le=65535, description="TCP port.")
    inbox_url: str = Field(min_length=1, description="SQLAlchemy URL of the webhook inbox.")
    jobs_url: str = Field(
        min_length=1, description="SQLAlchemy URL of the client job store and its outbox."
    )
    tenants_file: str = Field(min_length=1, description="YAML file of the API's tenants.")
    max_days_per_request: int = Field(ge=1, description="Longest date range one job may ask.")
    partition_days_ahead: int = Field(
        default=7,
        ge=0,
        le=366,
        description="Latest day a request may name: today (UTC) plus this many days (the "
        "earliest is the deployment's partition start).",
    )
    max_body_bytes: int = Field(
        default=1 << 20,
        ge=1024,
        le=64 << 20,
        description="Largest request body on any endpoint; larger ones get 413 unread.",
    )


class DatabricksSettings(_Section):
    """Engine ``databricks``: the workspace and the job cluster beyond its size."""

    host: str = Field(description="Workspace URL, https://adb-<id>.<n>.azuredatabricks.net.")
    token_env: str = Field(
        description="Environment variable holding a personal access token; unset: the SDK's "
        "default authentication (managed identity, Azure CLI, ARM_* service principal)."
    )
    spark_version: str = Field(min_length=1, description="Databricks runtime of job clusters.")
    spark_conf: dict[str, str] = Field(description="Spark conf of job clusters.")
    artifacts_dir: str = Field(description="DBFS folder the platform's wheel is uploaded to.")
    log_dir: str = Field(description="DBFS folder job clusters deliver driver logs to.")
    wheel: str = Field(description="A built wheel to install; empty: build from the repo.")
    cluster_model_cache_dir: str = Field(description="Compiled-model cache on cluster nodes.")
    target_minutes: float = Field(gt=0, description="Sizing: a run should finish within this.")
    poll_seconds: float = Field(gt=0, description="How often the run's state is polled.")


class ApplicationSettings(_Section):
    """Everything under ``batch-inference:`` in application.yml."""

    environment: Literal["local", "staging", "prod"]
    engine: Literal["local", "spark", "databricks"] = Field(description="Scoring engine.")
    data_dir: Path = Field(description="Working data (lake, mlflow, dagster home).")
    lake: LakeSettings
    mlflow: MlflowSettings
    model: ModelSettings
    deployments_dir: str = Field(
        default="",
        description="Folder of deployments (<name>/defs.yaml); empty: the package's "
        "defs/deployments. Relative paths are resolved against application.yml's folder.",
    )
    validation: ValidationSettings
    drift: DriftSettings
    api: ApiSettings
    spark: SparkSettings
    databricks: DatabricksSettings
    kafka: KafkaSettings
    realtime: RealtimeSettings
    scheduling: SchedulingSettings
    maintenance: MaintenanceSettings = Field(default_factory=MaintenanceSettings)
    owners: list[str] = Field(
        default_factory=list,
        description="Who answers for the platform's assets and, unless a deployment names its "
        "own, every deployment's: email addresses or team:<name>.",
    )

    @field_validator("owners")
    @classmethod
    def _owners(cls, owners: list[str]) -> list[str]:
        return check_owners(owners)


class _ApplicationFile(_Section):
    batch_inference: ApplicationSettings


class MetricsSettings(_Section):
    """How often metrics are collected."""

    collection_interval: Duration


class JobFailureAlert(_Section):
    """Alert when jobs fail."""

    threshold: int = Field(ge=1, description="Failures that trigger the alert.")
    notification: Annotated[list[str], BeforeValidator(_split_list)] = Field(min_length=1)


class SlackChannel(_Section):
    """Slack incoming webhook; its URL is a secret, read from the environment."""

    webhook_url_env: str = Field(min_length=1, description="Env var with the webhook URL.")


class EmailChannel(_Section):
    """SMTP delivery; credentials from the environment."""

    smtp_host: str = Field(min_length=1)
    smtp_port: int = Field(ge=1, le=65535)
    starttls: bool
    sender: str = Field(min_length=3)
    recipients: list[str] = Field(min_length=1)
    username_env: str = Field(description="Env var with the SMTP user; empty: no login.")
    password_env: str = Field(description="Env var with the SMTP password.")


class WebhookChannel(_Section):
    """A generic JSON webhook, signed with HMAC-SHA256 when a secret is set."""

    url_env: str = Field(min_length=1, description="Env var with the webhook URL.")
    secret_env: str = Field(description="Env var with the signing secret; empty: unsigned.")


class AlertChannels(_Section):
    """Where alerts go."""

    slack: SlackChannel
    email: EmailChannel
    webhook: WebhookChannel


class AlertSettings(_Section):
    """Alerting rules."""

    job_failure: JobFailureAlert
    channels: AlertChannels
    dagster_url: str = Field(min_length=1, description="Base URL of the Dagster UI (links).")


class JobCompletionTarget(_Section):
    """SLA: ``quantile`` of jobs complete ``within`` this duration (e.g. 90% < 1hour)."""

    quantile: Fraction
    within: Duration


class SlaTargets(_Section):
    """Service-level targets the platform is measured against."""

    job_completion: Annotated[JobCompletionTarget, BeforeValidator(_parse_job_completion)]
    data_throughput: Annotated[float, BeforeValidator(_parse_throughput)] = Field(
        description="Minimum records scored per hour."
    )
    error_rate: Fraction = Field(description="Maximum fraction of failed records.")


class PerformanceSettings(_Section):
    """Performance expectations."""

    sla_targets: SlaTargets


class MonitoringSettings(_Section):
    """Everything in monitoring.yml."""

    metrics: MetricsSettings
    alerts: AlertSettings
    performance: PerformanceSettings


class Settings(_Section):
    """All platform settings; paths are absolute (resolved against ``project_root``)."""

    application: ApplicationSettings
    monitoring: MonitoringSettings
    project_root: Path

    @property
    def data_dir(self) -> Path:
        """Working-data directory (lake, MLflow store, Dagster home)."""
        return self.application.data_dir

    @property
    def dagster_home(self) -> Path:
        """DAGSTER_HOME for local runs."""
        return self.data_dir / "dagster_home"

    @property
    def model_cache_dir(self) -> Path:
        """Compiled models, one entry per model version and content hash."""
        return self.data_dir / "model_cache"


# --------------------------------------------------------------------------- loading

_M = TypeVar("_M", bound=BaseModel)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError(f"{path.name}: cannot read {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise SettingsError(f"{path.name}: invalid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise SettingsError(f"{path.name}: top level must be a mapping of keys")
    return data


def _apply_overrides(
    docs: list[tuple[str, dict[str, Any]]], environ: Mapping[str, str]
) -> dict[tuple[str, ...], str]:
    """Apply BIP__ variables to the raw YAML documents in place; return {key path: variable}."""
    applied: dict[tuple[str, ...], str] = {}
    for var in sorted(v for v in environ if v.startswith(ENV_PREFIX)):
        segments = var[len(ENV_PREFIX) :].split("__")
        file, doc = next(((f, d) for f, d in docs if _match(d, segments[0])), docs[0])
        parent: dict[str, Any] = doc
        node: Any = doc
        path: list[str] = []
        for seg in segments:
            key = _match(node, seg) if isinstance(node, dict) else None
            if key is None:
                if not path:
                    files = " or ".join(f for f, _ in docs)
                    known = [str(k) for _, d in docs for k in d]
                    where = f"no top-level key matching {seg!r} in {files}"
                elif not isinstance(node, dict):
                    known, where = [], f"{file}: {'.'.join(path)} is a value, not a section"
                else:
                    known = [str(k) for k in node]
                    where = f"{file}: no key matching {seg!r} under {'.'.join(path)}"
                hint = f"; known keys: {', '.join(known)}" if known else ""
                raise SettingsError(f"{var}: names no known setting ({where}{hint})")
            path.append(key)
            parent, node = node, node[key]
        parent[path[-1]] = _env_value(environ[var], node)
        applied[tuple(path)] = var
    return applied


def _match(node: dict[str, Any], segment: str) -> str | None:
    wanted = segment.upper()
    return next((k for k in node if str(k).upper().replace("-", "_") == wanted), None)


def _env_value(raw: str, current: Any) -> Any:
    """Parse as YAML; structured results only replace structured values."""
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        return raw
    if isinstance(value, dict | list) and not isinstance(current, dict | list):
        return raw
    return value


def _format_errors(
    exc: ValidationError, file: str, model: type[BaseModel], overrides: dict[tuple[str, ...], str]
) -> str:
    lines = []
    for err in exc.errors(include_url=False):
        scope = loc = tuple(str(p) for p in err["loc"])
        ctx = err.get("ctx") or {}
        if err["type"] == "cross_field":  # model-level check reported on one of its fields
            loc += (str(ctx["field"]),)
            reason = err["msg"]
        elif err["type"] == "value_error":
            reason = str(ctx.get("error", err["msg"]))
        elif err["type"] == "extra_forbidden":
            reason = f"unknown key (allowed: {', '.join(_allowed_keys(model, loc))})"
        elif err["type"] == "missing":
            reason = "required key is missing"
        else:
            reason = f"{err['msg']} (got {err['input']!r})"
        envs = [v for p, v in overrides.items() if p[: len(scope)] == scope or loc[: len(p)] == p]
        suffix = f" (set by environment variable {', '.join(envs)})" if envs else ""
        lines.append(f"{file}: {'.'.join(loc)}: {reason}{suffix}")
    return "\n".join(lines)


def _allowed_keys(model: type[BaseModel], loc: tuple[str, ...]) -> list[str]:
    for part in loc[:-1]:
        fields = {f.alias or n: f.annotation for n, f in model.model_fields.items()}
        sub = fields.get(part)
        if not (isinstance(sub, type) and issubclass(sub, BaseModel)):
            return []
        model = sub
    return [f.alias or n for n, f in model.model_fields.items()]


def _resolve(value: str, base: Path) -> str:
    """Relative local path -> absolute path under base; URIs are left alone."""
    if _SCHEME.match(value):
        return value
    return str((base / Path(value).expanduser()).resolve())


def _resolve_sqlite(uri: str, base: Path) -> str:
    """``sqlite:///relative.db`` -> ``sqlite:////abs/relative.db``; other URIs unchanged."""
    rest = uri.removeprefix("sqlite:///")
    if uri.startswith("sqlite:///") and not rest.startswith("/") and rest != ":memory:":
        return f"sqlite:///{_resolve(rest, base)}"
    return uri


def _resolve_paths(app: ApplicationSettings, base: Path) -> ApplicationSettings:
    mlflow = app.mlflow
    uris = {
        name: _resolve_sqlite(getattr(mlflow, name), base)
        for name in ("tracking_uri", "registry_uri")
    }
    return app.model_copy(
        update={
            "data_dir": Path(_resolve(str(app.data_dir), base)),
            "lake": app.lake.model_copy(update={"root": _resolve(app.lake.root, base)}),
            "deployments_dir": _resolve(app.deployments_dir, base) if app.deployments_dir else "",
            "mlflow": mlflow.model_copy(
                update={**uris, "artifact_root": _resolve(mlflow.artifact_root, base)}
            ),
            "api": app.api.model_copy(
                update={
                    "inbox_url": _resolve_sqlite(app.api.inbox_url, base),
                    "jobs_url": _resolve_sqlite(app.api.jobs_url, base),
                    "tenants_file": _resolve(app.api.tenants_file, base),
                }
            ),
        }
    )


def _validate(
    model: type[_M], doc: dict[str, Any], file: str, overrides: dict[tuple[str, ...], str]
) -> _M:
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        raise SettingsError(_format_errors(exc, file, model, overrides)) from None


def load_settings(
    application_path: Path | None = None,
    monitoring_path: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Load both YAML files, apply ``BIP__`` overrides, validate and resolve relative paths.

    Paths default to ``$BIP_APPLICATION_YML`` / ``$BIP_MONITORING_YML``, else the repo root.
    """
    env = os.environ if environ is None else environ
    app_path = Path(application_path or env.get("BIP_APPLICATION_YML") or _ROOT / "application.yml")
    mon_path = Path(monitoring_path or env.get("BIP_MONITORING_YML") or _ROOT / "monitoring.yml")
    app_path, mon_path = app_path.resolve(), mon_path.resolve()
    app_doc, mon_doc = _read_yaml(app_path), _read_yaml(mon_path)
    overrides = _apply_overrides([(app_path.name, app_doc), (mon_path.name, mon_doc)], env)
    app = _validate(_ApplicationFile, app_doc, app_path.name, overrides).batch_inference
    monitoring = _validate(MonitoringSettings, mon_doc, mon_path.name, overrides)
    base = app_path.parent
    return Settings(application=_resolve_paths(app, base), monitoring=monitoring, project_root=base)
