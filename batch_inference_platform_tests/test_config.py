"""Tests for the typed YAML + environment settings in batch_inference_platform.config."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest

from batch_inference_platform.config import (
    JobCompletionTarget,
    Settings,
    SettingsError,
    load_settings,
    quartz_to_cron,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def yml_dir(tmp_path: Path) -> Path:
    """A writable copy of the shipped YAML files."""
    for name in ("application.yml", "monitoring.yml"):
        shutil.copy(REPO_ROOT / name, tmp_path / name)
    return tmp_path


def _load(directory: Path, **environ: str) -> Settings:
    return load_settings(
        directory / "application.yml", directory / "monitoring.yml", environ=environ
    )


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def _load_error(directory: Path, **environ: str) -> str:
    with pytest.raises(SettingsError) as info:
        _load(directory, **environ)
    return str(info.value)


# --------------------------------------------------------------------------- shipped files


def test_shipped_files_give_seed_values() -> None:
    settings = load_settings(environ={})
    app, mon = settings.application, settings.monitoring

    assert settings.project_root == REPO_ROOT
    assert (app.environment, app.engine) == ("local", "local")
    cluster = app.spark.cluster
    assert (cluster.min_workers, cluster.max_workers) == (2, 20)
    assert cluster.auto_scale is True
    assert cluster.node_type == "Standard_D4s_v3"
    assert (app.kafka.batch_size, app.kafka.linger_ms, app.kafka.buffer_memory) == (
        10000,
        100,
        33554432,
    )
    assert app.scheduling.default_schedule == "0 0 * * * ?"
    assert app.scheduling.cron == "0 * * * *"
    assert app.scheduling.max_concurrent_jobs == 5
    assert app.model.rescore_partitions == 3
    assert app.model.max_load_seconds == 300
    assert app.deployments_dir == ""
    assert app.realtime.deployment == "credit_risk"
    assert app.validation.min_rows == 100
    assert app.validation.max_null_rate == 0.5
    assert app.drift.bins == 10
    assert app.lake.storage_options == {}
    assert app.mlflow.experiment == "batch-inference"

    assert mon.metrics.collection_interval == dt.timedelta(seconds=30)
    assert mon.alerts.job_failure.threshold == 1
    assert mon.alerts.job_failure.notification == ["slack", "email", "webhook"]
    sla = mon.performance.sla_targets
    assert sla.job_completion == JobCompletionTarget(quantile=0.9, within=dt.timedelta(hours=1))
    assert sla.data_throughput == pytest.approx(1e6)
    assert sla.error_rate == pytest.approx(0.001)


def test_relative_paths_resolve_against_yml_directory(yml_dir: Path) -> None:
    settings = _load(yml_dir)
    mlflow = settings.application.mlflow

    assert settings.project_root == yml_dir
    assert settings.data_dir == yml_dir / "data"
    assert settings.data_dir.is_absolute()
    assert settings.dagster_home == yml_dir / "data" / "dagster_home"
    assert settings.application.lake.root == str(yml_dir / "data" / "lake")
    assert mlflow.tracking_uri == f"sqlite:///{yml_dir / 'data' / 'mlflow' / 'mlflow.db'}"
    assert mlflow.tracking_uri.startswith("sqlite:////")
    assert mlflow.artifact_root == str(yml_dir / "data" / "mlflow" / "artifacts")
    assert mlflow.registry_uri == ""
    assert mlflow.effective_registry_uri == mlflow.tracking_uri
    assert settings.application.deployments_dir == ""


def test_a_relative_deployments_dir_resolves_against_yml_directory(yml_dir: Path) -> None:
    settings = _load(yml_dir, BIP__BATCH_INFERENCE__DEPLOYMENTS_DIR="use_cases")
    assert settings.application.deployments_dir == str(yml_dir / "use_cases")


def test_uris_and_absolute_paths_are_kept(yml_dir: Path) -> None:
    settings = _load(
        yml_dir,
        BIP__BATCH_INFERENCE__LAKE__ROOT="abfss://lake@acct.dfs.core.windows.net/tables",
        BIP__BATCH_INFERENCE__MLFLOW__TRACKING_URI="databricks",
        BIP__BATCH_INFERENCE__MLFLOW__ARTIFACT_ROOT="dbfs:/mlflow/artifacts",
        BIP__BATCH_INFERENCE__DATA_DIR="/srv/bip",
    )
    app = settings.application
    assert app.lake.root == "abfss://lake@acct.dfs.core.windows.net/tables"
    assert app.mlflow.tracking_uri == "databricks"
    assert app.mlflow.artifact_root == "dbfs:/mlflow/artifacts"
    assert settings.data_dir == Path("/srv/bip")


def test_paths_default_to_env_variables(yml_dir: Path) -> None:
    environ = {
        "BIP_APPLICATION_YML": str(yml_dir / "application.yml"),
        "BIP_MONITORING_YML": str(yml_dir / "monitoring.yml"),
    }
    assert load_settings(environ=environ).project_root == yml_dir


# --------------------------------------------------------------------------- env overrides


def test_env_overrides_apply_with_yaml_types(yml_dir: Path) -> None:
    settings = _load(
        yml_dir,
        BIP__BATCH_INFERENCE__SPARK__CLUSTER__MAX_WORKERS="8",
        BIP__BATCH_INFERENCE__SPARK__CLUSTER__AUTO_SCALE="false",
        BIP__BATCH_INFERENCE__LAKE__ROOT="/tmp/x",
        BIP__BATCH_INFERENCE__LAKE__STORAGE_OPTIONS="{account_name: acct, use_emulator: true}",
        BIP__BATCH_INFERENCE__SCHEDULING__DEFAULT_SCHEDULE="0 30 2 ? * MON-FRI",
        BIP__METRICS__COLLECTION_INTERVAL="10s",
        BIP__PERFORMANCE__SLA_TARGETS__ERROR_RATE="< 1%",
        bip__ignored="not our prefix",
    )
    app, mon = settings.application, settings.monitoring
    assert app.spark.cluster.max_workers == 8
    assert app.spark.cluster.auto_scale is False
    assert app.lake.root == "/tmp/x"
    assert app.lake.storage_options == {"account_name": "acct", "use_emulator": "true"}
    assert app.scheduling.cron == "30 2 * * MON-FRI"
    assert mon.metrics.collection_interval == dt.timedelta(seconds=10)
    assert mon.performance.sla_targets.error_rate == pytest.approx(0.01)


def test_env_segments_match_case_insensitively(yml_dir: Path) -> None:
    settings = _load(yml_dir, BIP__Batch_Inference__Realtime__Deployment="churn")
    assert settings.application.realtime.deployment == "churn"


@pytest.mark.parametrize(
    "var",
    [
        "BIP__BATCH_INFERENCE__SPARK__CLUSTER__MAX_WORKRES",
        "BIP__BATCH_INFERENCE__NOPE",
        "BIP__METRIX__COLLECTION_INTERVAL",
        "BIP__BATCH_INFERENCE__MODEL__RESCORE_PARTITIONS__EXTRA",
        # settings that moved into each deployment's defs.yaml are no longer known
        "BIP__BATCH_INFERENCE__MODEL__NAME",
        "BIP__BATCH_INFERENCE__MODEL__ALIAS",
        "BIP__BATCH_INFERENCE__PARTITIONS__START_DATE",
    ],
)
def test_unknown_env_override_fails_naming_it(yml_dir: Path, var: str) -> None:
    message = _load_error(yml_dir, **{var: "1"})
    assert var in message
    assert "no known setting" in message


def test_invalid_env_override_names_file_key_and_variable(yml_dir: Path) -> None:
    message = _load_error(yml_dir, BIP__BATCH_INFERENCE__KAFKA__LINGER_MS="-5")
    assert "application.yml: batch-inference.kafka.linger-ms:" in message
    assert "BIP__BATCH_INFERENCE__KAFKA__LINGER_MS" in message


def test_cross_field_error_from_override_names_variable(yml_dir: Path) -> None:
    message = _load_error(yml_dir, BIP__BATCH_INFERENCE__SPARK__CLUSTER__MAX_WORKERS="1")
    assert message.startswith(
        "application.yml: batch-inference.spark.cluster.min-workers: must be <= max-workers (2 > 1)"
    )
    assert "BIP__BATCH_INFERENCE__SPARK__CLUSTER__MAX_WORKERS" in message


def test_monitoring_override_error_names_monitoring_file(yml_dir: Path) -> None:
    message = _load_error(yml_dir, BIP__METRICS__COLLECTION_INTERVAL="30 parsecs")
    assert "monitoring.yml: metrics.collection-interval: cannot parse duration" in message
    assert "BIP__METRICS__COLLECTION_INTERVAL" in message


# --------------------------------------------------------------------------- invalid files


def test_missing_file_fails(tmp_path: Path, yml_dir: Path) -> None:
    with pytest.raises(SettingsError, match=r"application\.yml: cannot read"):
        load_settings(tmp_path / "nope" / "application.yml", yml_dir / "monitoring.yml", {})


def test_bad_yaml_fails(yml_dir: Path) -> None:
    _edit(yml_dir / "monitoring.yml", "metrics:", "metrics: [unclosed")
    assert _load_error(yml_dir).startswith("monitoring.yml: invalid YAML")


@pytest.mark.parametrize(
    ("file", "old", "new", "expected"),
    [
        (
            "application.yml",
            "    bins: 10",
            "    bins: 10\n    binz: 3",
            "application.yml: batch-inference.drift.binz: unknown key (allowed: psi-threshold, "
            "bins)",
        ),
        (
            "application.yml",
            "min-workers: 2",
            "min-workers: 30",
            "application.yml: batch-inference.spark.cluster.min-workers: must be <= max-workers "
            "(30 > 20)",
        ),
        (
            "application.yml",
            "batch-size: 10000",
            "batch-size: lots",
            "application.yml: batch-inference.kafka.batch-size: Input should be a valid integer",
        ),
        (
            "application.yml",
            "engine: local",
            "engine: flink",
            "application.yml: batch-inference.engine: Input should be 'local', 'spark' or "
            "'databricks'",
        ),
        (
            "application.yml",
            "max-null-rate: 0.5",
            "max-null-rate: 1.5",
            "application.yml: batch-inference.validation.max-null-rate: Input should be less "
            "than or equal to 1",
        ),
        (
            "application.yml",
            "    max-load-seconds: 300",
            "",
            "application.yml: batch-inference.model.max-load-seconds: required key is missing",
        ),
        (
            "application.yml",
            '"0 0 * * * ?"',
            '"0 0 0 L * ?"',
            "application.yml: batch-inference.scheduling.default-schedule: Quartz schedule "
            "'0 0 0 L * ?': unsupported token 'L' in day-of-month field",
        ),
        (
            "monitoring.yml",
            "collection-interval: 30s",
            "collection-interval: 30 parsecs",
            "monitoring.yml: metrics.collection-interval: cannot parse duration '30 parsecs' "
            "(use e.g. 30s, 5m, 1h, 30d)",
        ),
        (
            "monitoring.yml",
            "error-rate: < 0.1%",
            "error-rate: lots",
            "monitoring.yml: performance.sla-targets.error-rate: cannot parse percentage",
        ),
        (
            "monitoring.yml",
            "job-completion: 90% < 1hour",
            "job-completion: 90% < soon",
            "monitoring.yml: performance.sla-targets.job-completion.within: cannot parse duration",
        ),
        (
            "monitoring.yml",
            "data-throughput: 1M records/hour",
            "data-throughput: plenty",
            "monitoring.yml: performance.sla-targets.data-throughput: cannot parse throughput",
        ),
    ],
)
def test_invalid_values_name_file_and_key(
    yml_dir: Path, file: str, old: str, new: str, expected: str
) -> None:
    _edit(yml_dir / file, old, new)
    assert expected in _load_error(yml_dir)


# --------------------------------------------------------------------------- value parsing


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("5m", dt.timedelta(minutes=5)),
        ("1h", dt.timedelta(hours=1)),
        ("1hour", dt.timedelta(hours=1)),
        ("2 days", dt.timedelta(days=2)),
    ],
)
def test_duration_formats(yml_dir: Path, raw: str, expected: dt.timedelta) -> None:
    settings = _load(yml_dir, BIP__METRICS__COLLECTION_INTERVAL=raw)
    assert settings.monitoring.metrics.collection_interval == expected


@pytest.mark.parametrize(
    ("raw", "per_hour"),
    [("1M records/hour", 1e6), ("500K records/min", 3e7), ("2 records/s", 7200), ("1B/h", 1e9)],
)
def test_throughput_formats(yml_dir: Path, raw: str, per_hour: float) -> None:
    settings = _load(yml_dir, BIP__PERFORMANCE__SLA_TARGETS__DATA_THROUGHPUT=raw)
    assert settings.monitoring.performance.sla_targets.data_throughput == pytest.approx(per_hour)


# --------------------------------------------------------------------------- Quartz -> cron


@pytest.mark.parametrize(
    ("quartz", "cron"),
    [
        ("0 0 * * * ?", "0 * * * *"),
        ("0 30 2 ? * MON-FRI", "30 2 * * MON-FRI"),
        ("0 0 12 ? * 2-6", "0 12 * * 1-5"),
        ("0 0 6 ? * 1,7", "0 6 * * 0,6"),
        ("0 0 6 ? * 2-6/2", "0 6 * * 1-5/2"),
        ("0 */15 * * * ?", "*/15 * * * *"),
        ("0 0 3 1 * ?", "0 3 1 * *"),
        ("0 0 3 1 JAN,JUL ?", "0 3 1 JAN,JUL *"),
        ("0 0 0 ? * SUN", "0 0 * * SUN"),
        ("0 0 * * * ? *", "0 * * * *"),
    ],
)
def test_quartz_to_cron(quartz: str, cron: str) -> None:
    assert quartz_to_cron(quartz) == cron


@pytest.mark.parametrize(
    ("quartz", "reason"),
    [
        ("0 0 0 L * ?", "unsupported token 'L' in day-of-month field"),
        ("0 0 0 LW * ?", "unsupported token 'LW' in day-of-month field"),
        ("0 0 0 15W * ?", "unsupported token 'W' in day-of-month field"),
        ("0 0 0 ? * 6L", "unsupported token 'L' in day-of-week field"),
        ("0 0 0 ? * 6#3", "unsupported token '#' in day-of-week field"),
        ("30 0 * * * ?", "seconds field must be 0"),
        ("0 0 0 * * ? 2027", "year field must be '*' or absent"),
        ("0 * * * *", "expected 6 or 7 fields"),
        ("0 0 0 1 * MON", "day-of-month and day-of-week are both specific"),
        ("0 0 0 ? * 0", "day-of-week '0' is outside 1-7"),
        ("0 0 ? * * *", "'?' is not allowed in the hours field"),
        ("0 0 0 31 2 ?", "converts to invalid cron"),
    ],
)
def test_quartz_rejections(quartz: str, reason: str) -> None:
    with pytest.raises(ValueError, match="Quartz schedule") as info:
        quartz_to_cron(quartz)
    assert reason in str(info.value)
    assert repr(quartz) in str(info.value)
