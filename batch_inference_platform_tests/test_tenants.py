"""The tenants file and what is derived from it: authentication by key hash, deployment and
table access, output roots, and the production dagster.yaml's run queue."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
import yaml

from batch_inference_platform.config import load_settings
from batch_inference_platform.lib.deployments.folder import read_deployments
from batch_inference_platform.lib.instance_yaml import instance_config, instance_yaml
from batch_inference_platform.lib.registry.references import (
    ModelReferenceError,
    parse_model_reference,
)
from batch_inference_platform.lib.tenants import (
    AccessDenied,
    TenantsError,
    hash_api_key,
    load_tenants,
)

from .servers import postgres_database
from .test_client_api import ACME_KEY, GLOBEX_KEY, write_tenants

REPO = Path(__file__).resolve().parents[1]


def test_keys_authenticate_their_tenant_only(tmp_path: Path) -> None:
    tenants = load_tenants(write_tenants(tmp_path / "t.yml"), "/lake")
    assert (tenants.authenticate(ACME_KEY) or object()).id == "acme"  # type: ignore[attr-defined]
    assert (tenants.authenticate(GLOBEX_KEY) or object()).id == "globex"  # type: ignore[attr-defined]
    assert tenants.authenticate("acme") is None
    assert tenants.authenticate(hash_api_key(ACME_KEY)) is None  # the hash is not a key


def test_tables_and_output_roots(tmp_path: Path) -> None:
    acme = load_tenants(write_tenants(tmp_path / "t.yml"), "/lake").get("acme")
    assert acme is not None
    assert acme.output_uri("scores/daily") == "/lake/tenants/acme/scores/daily"
    assert acme.input_table("validated/credit_risk") == "validated/credit_risk"
    with pytest.raises(AccessDenied, match="may not read table 'globex/private_features'"):
        acme.input_table("globex/private_features")
    escapes = ("../globex/x", "/etc/passwd", "abfss://c@a.dfs.core.windows.net/x", "a//b")
    for escape in (*escapes, "scores/x\n"):  # a trailing newline is not a table name
        with pytest.raises(AccessDenied):
            acme.output_uri(escape)


def test_deployments_a_tenant_may_use(tmp_path: Path) -> None:
    tenants = load_tenants(write_tenants(tmp_path / "t.yml"), "/lake")
    acme, globex = tenants.get("acme"), tenants.get("globex")
    assert acme is not None and globex is not None
    assert acme.deployment("credit_risk") == "credit_risk"
    with pytest.raises(AccessDenied, match="tenant 'acme' may not use deployment 'churn'"):
        acme.deployment("churn")
    assert globex.allowed_deployments == ("credit_risk", "churn")
    assert globex.deployment("churn") == "churn"


_ENTRY = (
    "tenants:\n  - {id: ab, api-key-sha256: '" + "0" * 64 + "', default-priority: normal, "
    "max-concurrent-runs: 1, allowed-input-tables: [], output-root: r"
)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("tenants: {}", "expected a top-level 'tenants:' list"),
        (_ENTRY + "}\n", "tenants[0]: allowed-deployments: Field required"),
        (
            _ENTRY + ", allowed-deployments: [Credit-Risk]}\n",
            "tenants[0]: allowed-deployments: Value error, 'Credit-Risk' is not a deployment name",
        ),
        ("tenants:\n  - id: x\n", "tenants[0]: id: String should match pattern"),
        (
            "tenants:\n  - {id: ab, api-key-sha256: nothex, default-priority: normal, "
            "max-concurrent-runs: 1, allowed-input-tables: [], output-root: r}\n",
            "tenants[0]: api-key-sha256",
        ),
        ("tenants: [", "not valid YAML"),
    ],
)
def test_a_bad_tenants_file_names_the_problem(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "t.yml"
    path.write_text(text)
    with pytest.raises(TenantsError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        load_tenants(path, "/lake")


def test_the_run_queue_caps_runs_and_each_tenant(tmp_path: Path) -> None:
    tenants = load_tenants(write_tenants(tmp_path / "t.yml"), "/lake")
    config = instance_config(max_concurrent_runs=5, tenants=tenants)
    runs = config["concurrency"]["runs"]
    assert runs["max_concurrent_runs"] == 5
    assert runs["tag_concurrency_limits"] == [
        {"key": "bip/singleton", "value": {"applyLimitPerUniqueValue": True}, "limit": 1},
        {"key": "tenant", "value": "acme", "limit": 1},
        {"key": "tenant", "value": "globex", "limit": 1},
    ]
    assert config["storage"]["postgres"]["postgres_url"] == {"env": "DAGSTER_POSTGRES_URL"}
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"


def test_the_committed_production_dagster_yaml_is_current() -> None:
    """deploy/dagster.yaml is `batch-inference dagster-yaml` of the committed settings."""
    settings = load_settings(environ={})
    app = settings.application
    expected = instance_yaml(
        max_concurrent_runs=app.scheduling.max_concurrent_jobs,
        tenants=load_tenants(Path(app.api.tenants_file), app.lake.root),
    )
    committed = (REPO / "deploy" / "dagster.yaml").read_text()
    assert committed == expected, "regenerate: batch-inference dagster-yaml > deploy/dagster.yaml"
    assert yaml.safe_load(committed)["concurrency"]["runs"]["max_concurrent_runs"] == 5


def test_the_production_dagster_yaml_loads_as_a_dagster_instance(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dagster itself accepts deploy/dagster.yaml: PostgreSQL storage, the queued run
    coordinator with its limits, and step logs in Azure Blob Storage."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO / "deploy" / "dagster.yaml").read_text())
    with postgres_database() as url:
        monkeypatch.setenv("DAGSTER_POSTGRES_URL", url.replace("+psycopg://", "+psycopg2://"))
        monkeypatch.setenv("DAGSTER_COMPUTE_LOGS_ACCOUNT", "bipstorage")
        monkeypatch.setenv("DAGSTER_COMPUTE_LOGS_CONTAINER", "dagster-logs")
        with dg.DagsterInstance.from_config(str(home)) as instance:
            assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
            assert type(instance.compute_log_manager).__name__ == "AzureBlobComputeLogManager"
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            queue = instance.get_concurrency_config().run_queue_config
            assert queue is not None and queue.max_concurrent_runs == 5


def test_local_only_tenants_do_not_exist_outside_local(tmp_path: Path) -> None:
    """The shipped demo tenant's key is published: staging and prod must not accept it."""
    shipped = REPO / "tenants.yml"
    demo = load_tenants(shipped, "/lake").authenticate("local-demo-key")
    assert demo is not None
    # It may use every shipped deployment, on its validated table.
    declared = read_deployments(REPO, lake_root="data/lake")
    assert sorted(demo.allowed_deployments) == sorted(declared)
    for name in declared:
        assert demo.deployment(name) == name
        assert demo.input_table(f"validated/{name}") == f"validated/{name}"
    for environment in ("staging", "prod"):
        assert load_tenants(shipped, "/lake", environment).authenticate("local-demo-key") is None


def test_a_model_reference_is_matched_whole() -> None:
    assert parse_model_reference("credit_risk_default@champion").alias == "champion"
    for bad in ("credit_risk_default@champion\n", "credit_risk_default/3\n"):
        with pytest.raises(ModelReferenceError):
            parse_model_reference(bad)
