"""The demo sources ``make demo`` writes (credit risk, churn): deterministic bytes, planted
dirty rows, the deployment's own key and partition columns, and the demo models they train."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import mlflow.sklearn as mlflow_sklearn
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from batch_inference_platform.lib.deployments.partitioning import Partitioning, PartitionKind
from batch_inference_platform.lib.features import churn, synthetic
from batch_inference_platform.lib.features.generators import GENERATORS, DemoSource, demo_source
from batch_inference_platform.lib.registry.client import ModelRegistry, pointed_at
from batch_inference_platform.lib.registry.training import (
    TrainingParams,
    churn_frame,
    train_and_register,
)
from batch_inference_platform.lib.scoring.outputs import OutputKind

DAY = "2026-11-01"
DAILY = Partitioning(PartitionKind.DAILY, "event_date")
SNAPSHOTS = Partitioning(PartitionKind.DAILY, "snapshot_date")
SMALL = TrainingParams(num_boost_round=20, num_leaves=15, learning_rate=0.1)

CREDIT_3000_ROWS = "e8e4595aafa376cf82f91dd44861b38df683589d5a690d3373f5713585e8acf9"
"""``generate_partition(2026-11-01, 3000, batch_rows=1000)`` before the demo sources existed."""


def digest(batches: Iterable[pa.RecordBatch]) -> str:
    """SHA-256 of the batches' Arrow IPC bytes."""
    hashed = hashlib.sha256()
    for batch in batches:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, batch.schema) as writer:
            writer.write_batch(batch)
        hashed.update(sink.getvalue())
    return hashed.hexdigest()


def table(source: DemoSource, partitioning: Partitioning, key: str, rows: int) -> pa.Table:
    return pa.Table.from_batches(
        list(source.generate(partitioning, key, rows)), schema=source.schema_for(partitioning)
    )


# ------------------------------------------------------------------------------ determinism


def test_credit_risk_writes_the_bytes_it_always_has() -> None:
    legacy = synthetic.generate_partition(dt.date(2026, 11, 1), 3000, batch_rows=1000)
    assert digest(legacy) == CREDIT_3000_ROWS
    source = GENERATORS["credit_risk"]
    assert digest(source.generate(DAILY, DAY, 3000, batch_rows=1000)) == CREDIT_3000_ROWS
    assert source.schema == synthetic.raw_schema() == source.schema_for(DAILY)
    assert len(synthetic.CREDIT_FEATURES) == 30


@pytest.mark.parametrize("name", ["credit_risk", "churn"])
def test_generators_are_deterministic(name: str) -> None:
    source = GENERATORS[name]
    partitioning = Partitioning(PartitionKind.DAILY, source.partition_column)

    def run(key: str = DAY, seed: int = 7) -> str:
        return digest(source.generate(partitioning, key, 5000, seed, batch_rows=2000))

    assert run() == run()
    assert run() != run(key="2026-11-02")
    assert run() != run(seed=8)
    batches = list(source.generate(partitioning, DAY, 5000, batch_rows=2000))
    assert [b.num_rows for b in batches] == [2000, 2000, 1000]
    keys = pa.concat_arrays([b.column(source.key[0]) for b in batches])
    assert len(pc.unique(keys)) > 0.99 * 5000  # batches go on where the last one ended


# ------------------------------------------------------------------------------ churn values


@pytest.fixture(scope="module")
def snapshot() -> pd.DataFrame:
    return table(GENERATORS["churn"], SNAPSHOTS, DAY, 200_000).to_pandas()


def test_churn_columns_types_and_ranges(snapshot: pd.DataFrame) -> None:
    source = GENERATORS["churn"]
    assert source.schema == churn.churn_raw_schema()
    assert source.schema.names == [
        "account_id",
        "snapshot_date",
        "tenure_months",
        "plan",
        "monthly_charges",
        "support_tickets_90d",
        "region",
        "last_login_days",
        "churn_risk",
    ]
    assert snapshot["account_id"].iloc[122] == "acct-000123"
    assert set(snapshot["churn_risk"]) == {"low", "medium", "high"}
    shares = snapshot["churn_risk"].value_counts(normalize=True)
    assert shares["low"] > shares["medium"] > shares["high"] > 0.05
    clean = snapshot[snapshot["plan"].isin(churn.PLANS) & (snapshot["monthly_charges"] >= 0)]
    for column in churn.CHURN_COLUMNS:
        values = pd.Series(clean[column.name])
        if column.categories:
            assert set(values) == set(column.categories), column.name
            continue
        assert values.min() >= column.min_value and values.max() <= column.max_value, column.name
        null_rate = values.isna().mean()
        assert null_rate == 0 if column.required else 0 < null_rate < 0.1, column.name


def test_churn_label_follows_the_features(snapshot: pd.DataFrame) -> None:
    high = snapshot["churn_risk"] == "high"
    new_and_unhappy = (snapshot["tenure_months"] < 6) & (snapshot["support_tickets_90d"] >= 2)
    loyal = (snapshot["tenure_months"] > 36) & (snapshot["support_tickets_90d"] == 0)
    assert high[new_and_unhappy].mean() > 3 * high.mean() > 10 * high[loyal].mean()


def test_churn_feed_is_dirty_like_real_feeds(snapshot: pd.DataFrame) -> None:
    rows = len(snapshot)
    defects = {
        "repeated account": snapshot["account_id"].duplicated().sum(),
        "negative charges": (snapshot["monthly_charges"] < 0).sum(),
        "unknown plan": (snapshot["plan"] == churn.UNKNOWN_PLAN).sum(),
    }
    for defect, count in defects.items():
        assert 0.0003 * rows < count < 0.003 * rows, (defect, count)
    assert set(snapshot["plan"]) == {*churn.PLANS, churn.UNKNOWN_PLAN}


# --------------------------------------------------------------------------- partition columns


@pytest.mark.parametrize("name", ["credit_risk", "churn"])
@pytest.mark.parametrize(
    ("partitioning", "key", "value"),
    [
        (
            Partitioning(PartitionKind.DAILY, "as_of"),
            "2026-11-03",
            dt.date(2026, 11, 3),
        ),
        (
            Partitioning(PartitionKind.HOURLY, "scored_hour"),
            "2026-11-03-06:00",
            dt.datetime(2026, 11, 3, 6, tzinfo=dt.UTC),
        ),
        (Partitioning(PartitionKind.NONE), "all", None),
    ],
)
def test_rows_carry_the_deployments_partition(
    name: str, partitioning: Partitioning, key: str, value: object
) -> None:
    source = GENERATORS[name]
    rows = table(source, partitioning, key, 1500)
    assert rows.schema == source.schema_for(partitioning)
    assert rows.schema.names[: len(source.key)] == list(source.key)
    assert rows.schema.field(source.key[0]).nullable is False
    assert source.partition_column not in rows.schema.names
    assert source.label in rows.schema.names
    assert set(source.features) <= set(rows.schema.names)
    if partitioning.column is None:
        assert rows.num_columns == len(source.key) + len(source.columns) + 1
        return
    assert rows.schema.names[len(source.key)] == partitioning.column
    assert rows.schema.field(partitioning.column).type == partitioning.arrow_type
    assert rows.column(partitioning.column).unique().to_pylist() == [value]
    # The values are the partition key's, whatever the partition column is called.
    renamed = pa.Table.from_batches(list(source.generate(partitioning, key, 1500)))
    assert renamed.drop_columns([partitioning.column]).equals(rows.drop([partitioning.column]))


def test_sources_are_named_as_the_yaml_names_them() -> None:
    assert set(GENERATORS) == {"credit_risk", "churn"}
    assert demo_source("churn").output_kind is OutputKind.CLASS_PROBABILITIES
    assert demo_source("credit_risk").output_kind is OutputKind.PROBABILITY
    with pytest.raises(ValueError, match="no demo generator 'fraud'"):
        demo_source("fraud")


# ------------------------------------------------------------------------------- demo models


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelRegistry, Path]:
    root = tmp_path_factory.mktemp("registry")
    return ModelRegistry(f"sqlite:///{root / 'mlflow.db'}"), root / "artifacts"


def train(
    registry: tuple[ModelRegistry, Path], source: DemoSource | None, name: str, rows: pa.Table
) -> tuple[int, bool]:
    client, artifacts = registry
    version, trained = train_and_register(
        client,
        model_name=name,
        alias="champion",
        experiment="demo-sources",
        artifact_root=str(artifacts),
        training_data=rows,
        data_version=f"test/{name}",
        params=SMALL,
        source=source,
    )
    assert client.by_alias(name, "champion").version == version.version
    return version.version, trained


def inputs(registry: ModelRegistry, name: str) -> dict[str, tuple[str, bool]]:
    signature = registry.signature(registry.by_alias(name, "champion"))
    assert signature is not None and signature.inputs is not None
    return {c["name"]: (c["type"], c["required"]) for c in signature.inputs.to_dict()}


def test_credit_risk_model_is_registered_with_its_signature(
    registry: tuple[ModelRegistry, Path],
) -> None:
    rows = table(GENERATORS["credit_risk"], DAILY, DAY, 5000)
    # Without a source: credit risk, as before there were demo sources.
    assert train(registry, None, "credit_demo", rows) == (1, True)
    assert train(registry, GENERATORS["credit_risk"], "credit_demo", rows) == (1, False)
    signature = inputs(registry[0], "credit_demo")
    assert list(signature) == list(synthetic.CREDIT_FEATURES)
    assert {kind for kind, _ in signature.values()} == {"double"}


def test_churn_model_predicts_three_class_probabilities(
    registry: tuple[ModelRegistry, Path],
) -> None:
    source = GENERATORS["churn"]
    rows = table(source, SNAPSHOTS, DAY, 20_000)
    assert train(registry, source, "churn_demo", rows) == (1, True)
    assert train(registry, source, "churn_demo", rows) == (1, False)
    assert inputs(registry[0], "churn_demo") == {
        "tenure_months": ("long", True),
        "plan": ("string", True),
        "monthly_charges": ("double", True),
        "support_tickets_90d": ("long", True),
        "region": ("string", True),
        "last_login_days": ("double", False),
    }

    client = registry[0]
    uri = client.by_alias("churn_demo", "champion").uri
    with pointed_at(client):
        model: Any = mlflow_sklearn.load_model(uri)
        served = mlflow.pyfunc.load_model(uri)
    # Another day's snapshot, an hourly partition: the model reads the features by name.
    hourly = Partitioning(PartitionKind.HOURLY, "snapshot_hour")
    batch = next(source.generate(hourly, "2026-11-02-06:00", 4000))
    frame = churn_frame(batch)
    assert [bool(frame[name].isna().any()) for name in frame] == [False] * 5 + [True]
    probabilities = model.predict_proba(frame)
    assert sorted(model.classes_) == sorted(churn.CLASSES)
    assert probabilities.shape == (4000, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    # The signature accepts the frame as the platform builds it; unknown plans score.
    assert len(served.predict(frame)) == 4000
    labels = np.asarray(model.classes_)[probabilities.argmax(axis=1)]
    truth = np.asarray(batch.column(churn.LABEL_COLUMN).to_pylist())
    assert (labels == truth).mean() > 0.65
    retired = np.asarray(batch.column("plan").to_pylist()) == churn.UNKNOWN_PLAN
    assert retired.any() and np.isfinite(probabilities[retired]).all()
