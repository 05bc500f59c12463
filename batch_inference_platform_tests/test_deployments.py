"""Deployments declared in YAML: a new use case with no Python, scored through the Dagster CLI;
and every way a defs.yaml can be wrong, refused when definitions load with the file, the line
and the field named."""

from __future__ import annotations

import copy
import datetime as dt
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import mlflow
import mlflow.sklearn as mlflow_sklearn
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import yaml
from mlflow import MlflowClient
from mlflow.models import infer_signature
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from batch_inference_platform.config import SettingsError, load_settings
from batch_inference_platform.definitions import build_definitions
from batch_inference_platform.lib.deployments.partitioning import Partitioning, PartitionKind
from batch_inference_platform.lib.lake.tables import DeltaLocation, replace_partition

from .conftest import ENV, read_day

PROJECT = Path(__file__).resolve().parents[1]
COMPONENT = "batch_inference_platform.components.ScoringDeployment"
HOURS = [dt.datetime(2026, 11, 2, h, tzinfo=dt.UTC) for h in (5, 6)]
HOURLY = Partitioning(PartitionKind.HOURLY, "event_hour", HOURS[0])
COUNTRIES = ["de", "fr", "nl"]


def merchant_rows(hour: dt.datetime, rows: int = 400) -> pa.Table:
    """A merchant-spend snapshot of one hour: string keys, a category, an amount."""
    rng = np.random.default_rng(hour.hour)
    return pa.table(
        {
            "merchant_id": pa.array([f"m-{i:05d}" for i in range(rows)]),
            "event_hour": pa.array([hour] * rows, pa.timestamp("us", tz="UTC")),
            "country": pa.array(rng.choice(COUNTRIES, rows).tolist()),
            "transactions": pa.array(rng.integers(0, 200, rows), pa.int64()),
            "avg_ticket": pa.array(rng.gamma(2.0, 20.0, rows)),
        }
    )


def features_frame(table: pa.Table) -> pd.DataFrame:
    return table.select(["country", "transactions", "avg_ticket"]).to_pandas()


def spend_model() -> Any:
    """A regression pipeline over a string category and two numbers (next hour's spend)."""
    frame = features_frame(merchant_rows(HOURS[0]))
    weight = frame["country"].replace({"de": 1.0, "fr": 1.2, "nl": 0.9}).astype(float)
    target = frame["transactions"] * frame["avg_ticket"] * weight
    encode = ColumnTransformer(
        [("country", OneHotEncoder(categories=[COUNTRIES]), ["country"])],  # pyright: ignore[reportArgumentType]
        remainder="passthrough",
    )
    return make_pipeline(encode, LinearRegression()).fit(frame, target), frame


def register_spend_model(tracking_uri: str, artifacts: Path) -> Any:
    model, example = spend_model()
    client = MlflowClient(tracking_uri, registry_uri=tracking_uri)
    experiment = client.create_experiment("spend", artifact_location=artifacts.as_uri())
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    with mlflow.start_run(experiment_id=experiment):
        info = mlflow_sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(example),
            registered_model_name="merchant_spend",
            pip_requirements=["scikit-learn"],
            skops_trusted_types=["numpy.dtype"],
        )
    client.set_registered_model_alias(
        "merchant_spend", "champion", str(info.registered_model_version)
    )
    return model


SPEND_YAML = """\
type: batch_inference_platform.components.ScoringDeployment
attributes:
  name: merchant_spend
  source:
    table: {table}
    key: [merchant_id]
    partition: {{column: event_hour, kind: hourly, start: "2026-11-02-05:00"}}
  contract:
    columns:
      - {{name: country, type: string, required: true, categories: [de, fr, nl]}}
      - {{name: transactions, type: integer, required: true, min: 0}}
      - {{name: avg_ticket, type: float, required: true, min: 0}}
  model: {{name: merchant_spend}}
  output: {{kind: value}}
  checks: {{min_rows: 10}}
"""


def cli_env(root: Path, deployments: Path) -> dict[str, str]:
    data = root / "data"
    env = {
        **os.environ,
        "DAGSTER_HOME": str(root / "dagster_home"),
        ENV + "DATA_DIR": str(data),
        ENV + "LAKE__ROOT": str(data / "lake"),
        ENV + "MLFLOW__TRACKING_URI": f"sqlite:///{data}/mlflow.db",
        ENV + "MLFLOW__REGISTRY_URI": "",
        ENV + "MLFLOW__ARTIFACT_ROOT": str(data / "artifacts"),
        ENV + "DEPLOYMENTS_DIR": str(deployments),
        ENV + "REALTIME__DEPLOYMENT": "",  # no customer insights: no probability model here
    }
    (root / "dagster_home").mkdir(parents=True, exist_ok=True)
    return env


def dagster(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), *args],
        env=env,
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_yaml_only_deployment_is_scored_end_to_end_through_the_dagster_cli(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    source = DeltaLocation(str(data / "external" / "merchant_spend"))
    batches = {hour: merchant_rows(hour) for hour in HOURS}
    for hour, table in batches.items():
        replace_partition(source, HOURLY, HOURLY.key_of(hour), table.to_batches(), table.schema)
    data.mkdir(exist_ok=True)
    model = register_spend_model(f"sqlite:///{data}/mlflow.db", data / "artifacts")
    deployments = tmp_path / "deployments"
    (deployments / "merchant_spend").mkdir(parents=True)
    (deployments / "merchant_spend" / "defs.yaml").write_text(SPEND_YAML.format(table=source.uri))
    env = cli_env(tmp_path, deployments)

    validated = dagster(
        env, "definitions", "validate", "-m", "batch_inference_platform.definitions"
    )
    assert validated.returncode == 0, validated.stdout + validated.stderr

    hour = "2026-11-02-06:00"
    done = dagster(
        env,
        "asset",
        "materialize",
        "-m",
        "batch_inference_platform.definitions",
        "--select",
        "merchant_spend/validated_features,merchant_spend/model_versions,"
        "merchant_spend/predictions",
        "--partition",
        hour,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]

    settings = load_settings(environ={k: v for k, v in env.items() if k.startswith("BIP__")})
    predictions = DeltaLocation(
        str(Path(settings.application.lake.root) / "predictions" / "merchant_spend")
    )
    scored = read_day(predictions, hour, HOURLY).sort_by("merchant_id")
    assert scored.column_names[:3] == ["merchant_id", "event_hour", "score"]
    expected = batches[HOURS[1]].sort_by("merchant_id")
    assert scored.column("merchant_id").to_pylist() == expected.column("merchant_id").to_pylist()
    assert set(scored.column("event_hour").to_pylist()) == {HOURS[1]}
    np.testing.assert_allclose(
        scored.column("score").to_numpy(), model.predict(features_frame(expected)), rtol=1e-9
    )


# --------------------------------------------------------------------------- bad YAML


def credit_yaml() -> dict[str, Any]:
    path = PROJECT / "batch_inference_platform" / "defs" / "deployments" / "credit_risk"
    return yaml.safe_load((path / "defs.yaml").read_text())


def load_error(tmp_path: Path, document: dict[str, Any] | str, **env: str) -> str:
    """The message that loading a deployments folder holding ``document`` fails with."""
    folder = tmp_path / "deployments"
    (folder / "broken").mkdir(parents=True, exist_ok=True)
    text = document if isinstance(document, str) else yaml.safe_dump(document, sort_keys=False)
    (folder / "broken" / "defs.yaml").write_text(text)
    environ = {
        ENV + "DATA_DIR": str(tmp_path / "data"),
        ENV + "LAKE__ROOT": str(tmp_path / "data" / "lake"),
        ENV + "MLFLOW__TRACKING_URI": f"sqlite:///{tmp_path}/data/mlflow.db",
        ENV + "DEPLOYMENTS_DIR": str(folder),
        **{ENV + k: v for k, v in env.items()},
    }
    (tmp_path / "data").mkdir(exist_ok=True)
    settings = load_settings(environ=environ)
    with pytest.raises(Exception) as raised:
        build_definitions(settings)
    messages = []
    error: BaseException | None = raised.value
    while error is not None:
        messages.append(str(error))
        error = error.__cause__ or error.__context__
    return "\n".join(messages)


def changed(document: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """``document`` with ``attributes.<path>`` set (``...`` removes it)."""
    node = document["attributes"]
    *parents, last = path.split(".")
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if value is ...:
        del node[last]
    elif last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return document


BROKEN = "deployments/broken/defs.yaml"


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("source.tabel", "x", "attributes.source.tabel"),
        ("source.partition.kind", "weekly", "Input should be 'daily', 'hourly' or 'none'"),
        ("model", ..., "attributes.model"),
        ("output.kind", "score", "Input should be 'probability'"),
        ("name", "Credit Risk", "is not a deployment name"),
        ("source.partition.start", "2026-13-01", "start '2026-13-01' is not a YYYY-MM-DD"),
        ("contract.columns.0.type", "decimal", "attributes.contract.columns.0.type"),
        ("contract.columns.0.min", 500, "min 500 is above max 100"),
        ("source.key", ["customer_id", "customer_id"], "key names a column more than once"),
    ],
)
def test_a_schema_error_names_the_file_and_the_field(
    tmp_path: Path, path: str, value: Any, expected: str
) -> None:
    document = credit_yaml()
    if path == "source.tabel":
        document["attributes"]["source"]["tabel"] = value
    else:
        changed(document, path, value)
    message = load_error(tmp_path, document)
    assert BROKEN in message
    assert expected in message


def observed_credit(tmp_path: Path) -> dict[str, Any]:
    """The credit deployment over an external table (no generator), which exists."""
    table = tmp_path / "external" / "credit"
    from batch_inference_platform.lib.features.generators import GENERATORS

    source = GENERATORS["credit_risk"]
    daily = Partitioning(PartitionKind.DAILY, "event_date", dt.datetime(2026, 11, 1, tzinfo=dt.UTC))
    replace_partition(
        DeltaLocation(str(table)),
        daily,
        "2026-11-02",
        source.generate(daily, "2026-11-02", 200),
        source.schema_for(daily),
    )
    document = credit_yaml()
    document["attributes"]["source"]["table"] = str(table)
    del document["attributes"]["source"]["generator"]
    return document


@pytest.mark.parametrize(
    ("path", "value", "field", "expected"),
    [
        ("source.table", "/nowhere/features", "attributes.source.table", "no Delta table at"),
        ("source.key", ["client_id"], "attributes.source.key", "column 'client_id' is not in"),
        (
            "source.partition.column",
            "snapshot_date",
            "attributes.source.partition.column",
            "column 'snapshot_date' is not in",
        ),
        (
            "source.partition.column",
            "age",
            "attributes.source.partition.column",
            "daily partitions need a date column; 'age' is int32",
        ),
        (
            "contract.columns.3.name",
            "loan_amount_eur",
            "attributes.contract.columns[3].name",
            "column 'loan_amount_eur' is not in the table",
        ),
        ("schedule", "0 0 6 * * MON#9", "attributes.schedule", "Quartz schedule"),
        ("engine", "databricks", "attributes.engine", "databricks.host"),
    ],
)
def test_an_error_only_the_data_shows_names_the_file_and_the_field(
    tmp_path: Path, path: str, value: Any, field: str, expected: str
) -> None:
    document = changed(observed_credit(tmp_path), path, value)
    if path == "contract.columns.3.name":
        document["attributes"]["contract"]["columns"][3] = {"name": value, "type": "float"}
    message = load_error(tmp_path, document, ENVIRONMENT="prod")
    assert f"{BROKEN}:" in message and field in message
    assert expected in message


def test_a_contract_column_the_model_does_not_take_is_refused_at_load(tmp_path: Path) -> None:
    document = observed_credit(tmp_path)
    (tmp_path / "data").mkdir(exist_ok=True)
    tracking = f"sqlite:///{tmp_path}/data/mlflow.db"
    # The registered model takes the contract's first 29 columns, not the 30th.
    columns = [c["name"] for c in document["attributes"]["contract"]["columns"]]
    example = pd.DataFrame({name: [1.0, 2.0] for name in columns[:-1]})
    from sklearn.dummy import DummyClassifier

    model = DummyClassifier(strategy="prior").fit(example, [0, 1])
    client = MlflowClient(tracking, registry_uri=tracking)
    experiment = client.create_experiment("x", artifact_location=(tmp_path / "a").as_uri())
    mlflow.set_tracking_uri(tracking)
    mlflow.set_registry_uri(tracking)
    with mlflow.start_run(experiment_id=experiment):
        info = mlflow_sklearn.log_model(
            model,
            name="model",
            signature=infer_signature(example),
            registered_model_name="credit_risk_default",
            pip_requirements=["scikit-learn"],
            skops_trusted_types=["numpy.dtype"],
        )
    client.set_registered_model_alias(
        "credit_risk_default", "champion", str(info.registered_model_version)
    )
    message = load_error(tmp_path, document, ENVIRONMENT="prod")
    assert f"{BROKEN}:" in message and "attributes.contract.columns[29].name" in message
    assert f"{columns[-1]!r} is not an input of models:/credit_risk_default/1" in message


def test_dagster_definitions_validate_names_the_broken_file(tmp_path: Path) -> None:
    folder = tmp_path / "deployments"
    (folder / "broken").mkdir(parents=True)
    document = credit_yaml()
    document["attributes"]["source"]["partition"]["kind"] = "weekly"
    (folder / "broken" / "defs.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    done = dagster(
        cli_env(tmp_path, folder) | {ENV + "REALTIME__DEPLOYMENT": "credit_risk"},
        "definitions",
        "validate",
        "-m",
        "batch_inference_platform.definitions",
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert f"{BROKEN}:" in output and "attributes.source.partition.kind" in output
    assert "Input should be 'daily', 'hourly' or 'none'" in output


def test_dg_lists_each_deployment_as_its_own_group_and_checks_their_yaml(tmp_path: Path) -> None:
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    dg_cli = str(Path(sys.executable).parent / "dg")
    checked = subprocess.run(
        [dg_cli, "check", "yaml"], env=env, cwd=PROJECT, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "All component YAML validated successfully" in checked.stdout + checked.stderr
    listed = subprocess.run(
        [dg_cli, "list", "defs", "--json"],
        env=env,
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert listed.returncode == 0, listed.stderr[-3000:]
    found = yaml.safe_load(listed.stdout)  # JSON is YAML
    groups = {a["asset_key"]: a["group_name"] for a in found["assets"]}
    for name in ("credit_risk", "churn"):
        for asset in ("feature_tables", "validated_features", "model_versions", "predictions"):
            assert groups[f"{name}/{asset}"] == name
    sensors = {s["name"]: s.get("source", "") for s in found["sensors"]}
    assert sensors["churn__mlflow_model_update_sensor"].startswith(
        "batch_inference_platform/defs/deployments/churn/defs.yaml"
    )


UNPARTITIONED_YAML = """\
type: batch_inference_platform.components.ScoringDeployment
attributes:
  name: merchant_totals
  source:
    table: {table}
    key: [merchant_id]
    partition: {{kind: none}}
  model: {{name: merchant_spend}}
  output: {{kind: value}}
  checks: {{min_rows: {min_rows}}}
"""


def unpartitioned_platform(tmp_path: Path, table: str, min_rows: int) -> tuple[Any, Any]:
    folder = tmp_path / f"deployments-{min_rows}"
    (folder / "merchant_totals").mkdir(parents=True)
    (folder / "merchant_totals" / "defs.yaml").write_text(
        UNPARTITIONED_YAML.format(table=table, min_rows=min_rows)
    )
    env = cli_env(tmp_path, folder)
    settings = load_settings(environ={k: v for k, v in env.items() if k.startswith("BIP__")})
    return settings, build_definitions(settings)


def test_an_unpartitioned_deployment_replaces_its_whole_table_within_its_own_limits(
    tmp_path: Path,
) -> None:
    """No contract: the model's signature is the contract; each run replaces the table."""
    import dagster as dg

    data = tmp_path / "data"
    data.mkdir()
    model = register_spend_model(f"sqlite:///{data}/mlflow.db", data / "artifacts")
    source = DeltaLocation(str(data / "external" / "merchant_totals"))
    whole = Partitioning(PartitionKind.NONE)
    first = merchant_rows(HOURS[0], 400).drop_columns(["event_hour"])
    replace_partition(source, whole, "all", first.to_batches(), first.schema)
    instance = dg.DagsterInstance.ephemeral(tempdir=str(tmp_path / "dagster"))
    settings, defs = unpartitioned_platform(tmp_path, source.uri, min_rows=10)
    job = defs.resolve_job_def("merchant_totals__score_partition_job")
    predictions = DeltaLocation(
        str(Path(settings.application.lake.root) / "predictions" / "merchant_totals")
    )
    for rows in (400, 300):
        table = merchant_rows(HOURS[0], rows).drop_columns(["event_hour"])
        replace_partition(source, whole, "all", table.to_batches(), table.schema)
        result = job.execute_in_process(instance=instance, raise_on_error=False)
        assert result.success
        scored = read_day(predictions, "all", whole).sort_by("merchant_id")
        assert scored.column_names[:2] == ["merchant_id", "score"]
        assert scored.num_rows == rows  # the whole table replaced, not appended
        expected = table.sort_by("merchant_id")
        np.testing.assert_allclose(
            scored.column("score").to_numpy(), model.predict(features_frame(expected)), rtol=1e-9
        )

    _, strict = unpartitioned_platform(tmp_path, source.uri, min_rows=1000)
    result = strict.resolve_job_def("merchant_totals__score_partition_job").execute_in_process(
        instance=instance, raise_on_error=False
    )
    verdicts = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert verdicts["row_count_at_least_minimum"] is False  # the deployment's own limit
    assert read_day(predictions, "all", whole).num_rows == 300  # nothing scored over it
    instance.dispose()


def test_a_lake_table_lives_under_each_environments_lake_root(tmp_path: Path) -> None:
    from batch_inference_platform.lib.deployments.spec import resolve_table

    assert resolve_table(
        "lake://features/x", PROJECT, "abfss://c@a.dfs.core.windows.net/lake/"
    ) == ("abfss://c@a.dfs.core.windows.net/lake/features/x")
    assert resolve_table("lake://features/x", PROJECT, str(tmp_path)) == f"{tmp_path}/features/x"
    assert resolve_table("az://c/t", PROJECT, str(tmp_path)) == "az://c/t"
    assert resolve_table("data/t", PROJECT, str(tmp_path)) == str(PROJECT / "data" / "t")
    with pytest.raises(ValueError, match="needs the lake root"):
        resolve_table("lake://features/x", PROJECT)


def test_two_deployments_cannot_write_one_table(tmp_path: Path) -> None:
    """A second deployment whose predictions land on the first one's table is refused."""
    first = observed_credit(tmp_path)
    second = copy.deepcopy(first)
    second["attributes"]["name"] = "credit_copy"
    second["attributes"]["output"]["table"] = "lake://predictions/credit_risk"
    folder = tmp_path / "deployments"
    for document in (first, second):
        path = folder / document["attributes"]["name"] / "defs.yaml"
        path.parent.mkdir(parents=True)
        path.write_text(yaml.safe_dump(document, sort_keys=False))
    environ = {
        ENV + "ENVIRONMENT": "prod",
        ENV + "DATA_DIR": str(tmp_path / "data"),
        ENV + "LAKE__ROOT": str(tmp_path / "data" / "lake"),
        ENV + "MLFLOW__TRACKING_URI": f"sqlite:///{tmp_path}/data/mlflow.db",
        ENV + "DEPLOYMENTS_DIR": str(folder),
    }
    (tmp_path / "data").mkdir(exist_ok=True)
    with pytest.raises(
        SettingsError,
        match=r"its predictions table \S+/predictions/credit_risk is also the table of "
        r"credit_(risk|copy) \(predictions\)",
    ):
        build_definitions(load_settings(environ=environ))


def test_realtime_insights_need_a_probability_per_customer(tmp_path: Path) -> None:
    document = credit_yaml()
    document["attributes"]["output"] = {"kind": "value"}
    folder = tmp_path / "deployments" / "credit_risk"
    folder.mkdir(parents=True)
    (folder / "defs.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    environ = {
        ENV + "DATA_DIR": str(tmp_path / "data"),
        ENV + "LAKE__ROOT": str(tmp_path / "data" / "lake"),
        ENV + "MLFLOW__TRACKING_URI": f"sqlite:///{tmp_path}/data/mlflow.db",
        ENV + "DEPLOYMENTS_DIR": str(folder.parent),
    }
    (tmp_path / "data").mkdir(exist_ok=True)
    with pytest.raises(SettingsError, match=r"realtime\.deployment: credit_risk serves value"):
        build_definitions(load_settings(environ=environ))
    off = build_definitions(load_settings(environ={**environ, ENV + "REALTIME__DEPLOYMENT": ""}))
    keys = {k.to_user_string() for k in off.resolve_asset_graph().get_all_asset_keys()}
    assert "customer_insights" not in keys and "customer_activity_windows" in keys
