"""What the Dagster UI shows of the code location, from the built Definitions: sensors that need
Kafka only when Kafka is configured, one group per deployment plus the platform's, storage
kinds true to where tables live, owners from configuration, and a load without warnings that
only Dagster or a library could act on."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import dagster as dg
import pytest

from batch_inference_platform.config import SettingsError, load_settings
from batch_inference_platform.definitions import build_definitions, quiet_dagster_internals
from batch_inference_platform.lib.deployments.spec import check_owners

from .conftest import ENV, write_deployment

REPO_ROOT = Path(__file__).resolve().parents[1]
KAFKA_SENSORS = {
    "client_request_sensor",
    "client_job_started",
    "client_job_succeeded",
    "client_job_failed",
    "client_job_canceled",
}
ARCHIVE_ON_ADLS = "abfss://archive@bipdemo.dfs.core.windows.net/bip"


def _environ(tmp_path: Path, **settings: str) -> dict[str, str]:
    """Settings variables of a local platform in ``tmp_path`` (deployments: copies of the
    package's in ``tmp_path/deployments``), plus ``settings`` below batch-inference."""
    data = tmp_path / "data"
    base = {
        "DEPLOYMENTS_DIR": str(tmp_path / "deployments"),
        "DATA_DIR": str(data),
        "LAKE__ROOT": str(data / "lake"),
        "MLFLOW__TRACKING_URI": f"sqlite:///{data}/mlflow.db",
    }
    return {ENV + key: value for key, value in {**base, **settings}.items()}


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> dg.Definitions:
    """The local code location as configured: no Kafka, lake and archive on local disk."""
    tmp_path = tmp_path_factory.mktemp("local")
    for name in ("credit_risk", "churn"):
        write_deployment(tmp_path / "deployments", name, {})
    return build_definitions(load_settings(environ=_environ(tmp_path)))


@pytest.fixture(scope="module")
def configured(tmp_path_factory: pytest.TempPathFactory) -> dg.Definitions:
    """Kafka configured, the archive on ADLS, platform owners set, churn naming no owners."""
    tmp_path = tmp_path_factory.mktemp("configured")
    write_deployment(tmp_path / "deployments", "credit_risk", {"owners": ["risk@bank.example"]})
    write_deployment(tmp_path / "deployments", "churn", {"owners": None})
    environ = _environ(
        tmp_path,
        KAFKA__BOOTSTRAP_SERVERS="localhost:9092",
        LAKE__ARCHIVE_ROOT=ARCHIVE_ON_ADLS,
        OWNERS="[team:ml-platform, ops@bank.example]",
    )
    return build_definitions(load_settings(environ=environ))


def _node(defs: dg.Definitions, key: str) -> dg.AssetSpec:
    return defs.resolve_asset_graph().get(dg.AssetKey.from_user_string(key)).to_asset_spec()


def test_without_kafka_no_sensor_waits_for_client_requests_or_their_runs(
    local: dg.Definitions,
) -> None:
    """The request sensor reads only the input topic (the API's accepted jobs wait in its
    outbox until a broker is configured), and the status sensors follow only the runs it
    launches: without Kafka none of them is defined."""
    sensors = {s.name for s in local.get_repository_def().sensor_defs}
    assert not KAFKA_SENSORS & sensors
    assert {"run_metrics_on_success", "job_failure_alerts"} <= sensors


def test_with_kafka_the_client_sensors_are_defined_and_running(
    configured: dg.Definitions,
) -> None:
    repository = configured.get_repository_def()
    sensors = {s.name: s for s in repository.sensor_defs}
    assert set(sensors) >= KAFKA_SENSORS
    for name in KAFKA_SENSORS:
        assert sensors[name].default_status is dg.DefaultSensorStatus.RUNNING, name


def test_groups_are_one_per_deployment_and_the_platforms(local: dg.Definitions) -> None:
    graph = local.resolve_asset_graph()
    groups = {key.to_user_string(): graph.get(key).group_name for key in graph.get_all_asset_keys()}
    assert set(groups.values()) == {"credit_risk", "churn", "platform"}
    assert groups["credit_risk/predictions"] == "credit_risk"
    assert groups["churn/archived_features"] == "churn"
    for platform_asset in ("customer_activity_windows", "sla_report", "lake_maintenance"):
        assert groups[platform_asset] == "platform"
    # The real-time job still selects the windows and the insights computed from them.
    job = local.resolve_job_def("realtime_insights_job")
    assert {k.to_user_string() for k in job.asset_layer.executable_asset_keys} == {
        "customer_activity_windows",
        "customer_insights",
    }


def test_storage_kinds_follow_where_the_tables_live(
    local: dg.Definitions, configured: dg.Definitions
) -> None:
    """A local archive is no Azure table; an archive root on ADLS is (the rest of that lake
    stays local)."""
    for name in ("credit_risk", "churn"):
        assert "azure" not in _node(local, f"{name}/archived_features").kinds
        assert "deltalake" in _node(local, f"{name}/archived_features").kinds
        assert "azure" in _node(configured, f"{name}/archived_features").kinds
        assert "azure" not in _node(configured, f"{name}/predictions").kinds
    assert "azure" not in _node(local, "lake_maintenance").kinds
    assert "azure" in _node(configured, "lake_maintenance").kinds  # it vacuums the archive
    assert "azure" not in _node(configured, "customer_activity_windows").kinds


def test_on_a_lake_on_adls_every_table_is_of_kind_azure(tmp_path: Path) -> None:
    for name in ("credit_risk", "churn"):
        write_deployment(tmp_path / "deployments", name, {})
    environ = _environ(tmp_path, LAKE__ROOT="abfss://lake@bipdemo.dfs.core.windows.net/bip")
    defs = build_definitions(load_settings(environ=environ))
    graph = defs.resolve_asset_graph()
    kinds = {k.to_user_string(): set(graph.get(k).kinds) for k in graph.get_all_asset_keys()}
    tables = {key for key, found in kinds.items() if "deltalake" in found}
    assert {"credit_risk/predictions", "churn/feature_tables", "customer_insights"} <= tables
    assert all("azure" in kinds[key] for key in tables), kinds
    assert not any("azure" in kinds[key] for key in set(kinds) - tables), kinds


def test_owners_come_from_the_settings_and_a_deployments_yaml(
    local: dg.Definitions, configured: dg.Definitions
) -> None:
    """Every asset of a deployment has its defs.yaml's owners, else the platform's; the
    platform's assets have the platform's (application.yml's, in the package's files)."""
    graph = configured.resolve_asset_graph()
    owners = {
        key.to_user_string(): list(graph.get(key).owners) for key in graph.get_all_asset_keys()
    }
    platform = ["team:ml-platform", "ops@bank.example"]
    for key, found in owners.items():
        if key.startswith("credit_risk/"):
            assert found == ["risk@bank.example"], key
        else:  # churn names none: the platform's, like the platform's own assets
            assert found == platform, key
    assert len([k for k in owners if k.startswith("churn/")]) >= 6
    # The package's demo deployments name their teams; application.yml names the platform's.
    assert _node(local, "credit_risk/predictions").owners == [
        "team:credit-risk",
        "team:ml-platform",
    ]
    assert _node(local, "churn/predictions").owners == ["team:customer-analytics"]
    assert _node(local, "sla_report").owners == ["team:ml-platform"]


@pytest.mark.parametrize(
    "owner",
    ["team:", "ml-platform", "someone@", "a b@bank.example", "ops@bank", "team:a", "x@y.io"],
)
def test_owners_are_validated_like_dagster_validates_them(owner: str) -> None:
    """An owner the settings accept is one Dagster accepts, and the other way round."""
    try:
        dg.AssetSpec("probe", owners=[owner])
        dagster_accepts = True
    except dg.DagsterInvalidDefinitionError:
        dagster_accepts = False
    try:
        check_owners([owner])
        we_accept = True
    except ValueError:
        we_accept = False
    assert we_accept == dagster_accepts


def test_a_bad_owner_fails_the_settings_and_the_deployment_load(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"batch-inference\.owners: owner 'ml-platform'"):
        load_settings(environ=_environ(tmp_path, OWNERS="[ml-platform]"))
    write_deployment(tmp_path / "deployments", "credit_risk", {"owners": ["team:"]})
    with pytest.raises(Exception) as raised:
        build_definitions(load_settings(environ=_environ(tmp_path)))
    messages, error = [], raised.value
    while error is not None:
        messages.append(str(error))
        error = error.__cause__ or error.__context__
    assert "owner 'team:' is neither an email address nor a team" in "\n".join(messages)


WARNING_LINE = re.compile(r"\b\w*Warning\b: ")


def _import_warnings() -> list[str]:
    """The warning lines ``python -W default -c 'import ...definitions'`` prints."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("BIP__", "BIP_"))}
    done = subprocess.run(
        [sys.executable, "-W", "default", "-c", "import batch_inference_platform.definitions"],
        cwd=REPO_ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return [line for line in done.stderr.splitlines() if WARNING_LINE.search(line)]


def test_loading_the_definitions_prints_no_warning_of_dagster_or_a_library() -> None:
    """Beta/preview notices of Dagster's own loader, Pydantic and SQLAlchemy deprecations
    inside Dagster and MLflow: nothing a user could act on is printed."""
    lines = _import_warnings()
    assert not [line for line in lines if "site-packages" in line], "\n".join(lines)


def test_loading_the_definitions_prints_no_warning_at_all() -> None:
    lines = _import_warnings()
    assert not lines, "\n".join(lines)


def test_the_filter_lets_our_own_warnings_through() -> None:
    """Only Dagster's and the libraries' notices are silenced: a warning of our code, or the
    same Dagster category about something else, still shows."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_dagster_internals():
            warnings.warn("a user's defs.yaml names a retired field", UserWarning, stacklevel=1)
            warnings.warn("Class `Other` is currently in beta", dg.BetaWarning, stacklevel=1)
            warnings.warn_explicit(
                "Class `LocalFileCodeReference` is currently in beta, ...",
                dg.BetaWarning,
                "component.py",
                352,
                module="dagster.components.component.component",
            )
    assert [str(w.message) for w in caught] == [
        "a user's defs.yaml names a retired field",
        "Class `Other` is currently in beta",
    ]
