"""Two deployments side by side in one code location: credit_risk (integer customer keys by
``event_date``, a probability of default) and churn (string account keys by ``snapshot_date``,
one probability per risk class and the most likely class). One platform generates, trains and
scores a day of each with each deployment's own jobs; each prediction table has its own
columns and scores exactly its validated rows, and the one catalog records both.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import dagster as dg
import numpy as np
import pyarrow as pa
import pytest

from batch_inference_platform.lib.scoring.outputs import SUM_TOLERANCE

from .conftest import (
    CREDIT,
    DAY_A,
    ROWS_PER_DAY,
    Platform,
    PlatformFactory,
    failure_messages,
    materializations,
    read_all,
    read_day,
)

CHURN = "churn"
CLASSES = ("high", "low", "medium")
"""The churn model's classes, in the order of its columns (scikit-learn sorts them)."""
PROVENANCE = [
    ("model_name", pa.string()),
    ("model_version", pa.int64()),
    ("scored_at", pa.timestamp("us", tz="UTC")),
    ("run_id", pa.string()),
]
COLUMNS = {
    CREDIT: [
        ("customer_id", pa.int64()),
        ("event_date", pa.date32()),
        ("score", pa.float64()),
        *PROVENANCE,
    ],
    CHURN: [
        ("account_id", pa.string()),
        ("snapshot_date", pa.date32()),
        *((f"score_{name}", pa.float64()) for name in CLASSES),
        ("label", pa.string()),
        *PROVENANCE,
    ],
}
"""Each deployment's prediction columns, exactly: its key and partition column, its output
kind's columns, then provenance."""
KEYS = {CREDIT: "customer_id", CHURN: "account_id"}


@dataclass
class Scored:
    platform: Platform
    """The platform driving this deployment (its jobs, tables and keys)."""
    result: dg.ExecuteInProcessResult
    validated: pa.Table
    predictions: pa.Table


@dataclass
class Both:
    scored: dict[str, Scored]
    catalog: pa.Table


def _materialized_keys(result: dg.ExecuteInProcessResult) -> set[dg.AssetKey]:
    return {
        event.step_materialization_data.materialization.asset_key
        for event in result.get_asset_materialization_events()
    }


@pytest.fixture(scope="module")
def both(make_platform: PlatformFactory) -> Both:
    """Each step for both deployments before the next (churn driven by its own ``churn__``
    jobs); the tables are read once everything ran, so neither run disturbed the other's."""
    credit = make_platform("two_deployments")  # the package's deployments, sources its own
    platforms = {CREDIT: credit, CHURN: dataclasses.replace(credit, deployment_name=CHURN)}
    for step in (lambda p: p.generate(DAY_A), lambda p: p.train()):
        for platform in platforms.values():
            result = step(platform)
            assert result.success, failure_messages(result)
    results = {name: platform.score(DAY_A) for name, platform in platforms.items()}
    scored = {}
    for name, platform in platforms.items():
        assert results[name].success, failure_messages(results[name])
        partitioning = platform.deployment.partitioning
        scored[name] = Scored(
            platform,
            results[name],
            read_day(platform.tables.validated, DAY_A, partitioning),
            read_day(platform.tables.predictions, DAY_A, partitioning),
        )
    return Both(scored, read_all(credit.layout.catalog))


def test_one_code_location_holds_both_deployments(both: Both) -> None:
    defs = both.scored[CREDIT].platform.defs
    for name in (CREDIT, CHURN):
        for job in ("score_partition_job", "rescore_job", "generate_features_job"):
            assert defs.resolve_job_def(f"{name}__{job}").name == f"{name}__{job}"
        assert both.scored[name].result.dagster_run.job_name == f"{name}__score_partition_job"
        # Each deployment's run materializes its own assets only.
        keys = {key.to_user_string() for key in _materialized_keys(both.scored[name].result)}
        assert keys == {
            f"{name}/{asset}"
            for asset in (
                "validated_features",
                "model_versions",
                "predictions",
                "catalog_entries",
                "archived_features",
            )
        }


@pytest.mark.parametrize("name", [CREDIT, CHURN])
def test_prediction_table_has_the_deployments_columns(both: Both, name: str) -> None:
    predictions = both.scored[name].predictions
    assert [(f.name, f.type) for f in predictions.schema] == COLUMNS[name]
    assert predictions.num_rows > 0


@pytest.mark.parametrize("name", [CREDIT, CHURN])
def test_every_validated_row_is_scored_once(both: Both, name: str) -> None:
    scored = both.scored[name]
    key = KEYS[name]
    validated, predictions = scored.validated, scored.predictions
    assert validated.num_rows > 0.99 * ROWS_PER_DAY
    keys = predictions.column(key).to_pylist()
    assert len(keys) == len(set(keys)) == validated.num_rows
    assert set(keys) == set(validated.column(key).to_pylist())
    assert set(predictions.column("run_id").to_pylist()) == {scored.result.run_id}
    assert set(predictions.column("model_name").to_pylist()) == {scored.platform.model_name}
    metadata = materializations(scored.result)["predictions"]
    assert metadata["deployment"] == name
    assert metadata["dagster/row_count"] == validated.num_rows


def test_credit_scores_are_probabilities(both: Both) -> None:
    scores = both.scored[CREDIT].predictions.column("score").to_numpy()
    assert ((scores >= 0) & (scores <= 1)).all() and scores.std() > 0


def test_churn_class_probabilities_sum_to_one_and_the_label_is_the_most_likely(
    both: Both,
) -> None:
    predictions = both.scored[CHURN].predictions
    probabilities = np.column_stack(
        [predictions.column(f"score_{name}").to_numpy() for name in CLASSES]
    )
    assert np.isfinite(probabilities).all()
    assert ((probabilities >= 0) & (probabilities <= 1)).all()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=0, atol=SUM_TOLERANCE)
    labels = predictions.column("label").to_pylist()
    assert labels == [CLASSES[i] for i in probabilities.argmax(axis=1)]
    assert set(labels) == set(CLASSES)  # a real model: every class is somebody's most likely


def test_the_catalog_records_both_deployments(both: Both) -> None:
    rows = both.catalog.to_pylist()
    assert {row["deployment"] for row in rows} == {CREDIT, CHURN}
    for name, scored in both.scored.items():
        platform = scored.platform
        entries: dict[str, dict[str, Any]] = {
            row["dataset"]: row for row in rows if row["deployment"] == name
        }
        assert set(entries) == {"validated_features", "quarantine", "predictions"}, name
        assert all(row["partition"] == DAY_A.isoformat() for row in entries.values())
        assert all(row["run_id"] == scored.result.run_id for row in entries.values())
        prediction = entries["predictions"]
        assert prediction["table_uri"] == platform.tables.predictions.uri
        assert prediction["rows"] == scored.predictions.num_rows
        assert prediction["model_name"] == platform.model_name
        assert prediction["model_version"] == 1
        assert entries["validated_features"]["table_uri"] == platform.tables.validated.uri
    uris = {both.scored[name].platform.tables.predictions.uri for name in (CREDIT, CHURN)}
    assert len(uris) == 2
