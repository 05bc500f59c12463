"""The scoring graph end to end on small data: two daily partitions generated, the demo model
trained and registered, each partition validated, scored and cataloged; then one day rerun.

Assertions are on the Delta tables, their commit history and the MLflow registry, not only on
run success.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from batch_inference_platform.defs import display
from batch_inference_platform.defs.resources import ModelRegistryResource
from batch_inference_platform.lib.features.synthetic import DATE_COLUMN, KEY_COLUMN
from batch_inference_platform.lib.lake.tables import schema_hash, table_schema
from batch_inference_platform.lib.quality.rules import REASON_COLUMN
from batch_inference_platform.lib.scoring.kernel import prediction_schema
from batch_inference_platform.lib.scoring.outputs import SCORE_COLUMN, OutputKind, OutputSpec

from .conftest import (
    DAY_A,
    DAY_B,
    ROWS_PER_DAY,
    Platform,
    PlatformFactory,
    check_evaluations,
    commit_info,
    materializations,
    read_all,
    read_day,
)

PREDICTION_SCHEMA = prediction_schema(
    pa.schema([pa.field(KEY_COLUMN, pa.int64()), pa.field(DATE_COLUMN, pa.date32())]),
    OutputSpec(OutputKind.PROBABILITY),
)
"""Credit risk's predictions: its key (int64, the validated type) and day, then the score."""

DAYS = (DAY_A, DAY_B)


@dataclass
class Scored:
    """One scoring run and the state of the tables right after it."""

    result: dg.ExecuteInProcessResult
    metadata: dict[str, dict[str, Any]]
    predictions: pa.Table
    validated: pa.Table
    quarantine: pa.Table


@dataclass
class Graph:
    platform: Platform
    champion: int
    features_version: int
    scored: dict[dt.date, Scored]
    catalog: pa.Table
    predictions_version: int


def _scored(platform: Platform, day: dt.date) -> Scored:
    result = platform.score(day)
    assert result.success, f"scoring {day} failed"
    return Scored(
        result,
        materializations(result),
        read_day(platform.predictions, day),
        read_day(platform.tables.validated, day),
        read_day(platform.tables.quarantine, day),
    )


@pytest.fixture(scope="module")
def graph(make_platform: PlatformFactory) -> Graph:
    platform = make_platform("graph")
    for day in DAYS:
        assert platform.generate(day).success
    assert platform.train().success
    champion = platform.registry.by_alias(platform.model_name, platform.alias).version
    scored = {day: _scored(platform, day) for day in DAYS}
    return Graph(
        platform,
        champion,
        platform.tables.features.open().version(),
        scored,
        read_all(platform.layout.catalog),
        platform.predictions.open().version(),
    )


@dataclass
class Rerun:
    before: Graph
    after: Scored
    predictions_version: int
    other_day: pa.Table
    catalog: pa.Table
    catalog_after_rerecord: pa.Table
    rerecord: dg.ExecuteInProcessResult


@pytest.fixture(scope="module")
def rerun(graph: Graph) -> Rerun:
    """DAY_A scored again, then only its catalog entries recorded once more."""
    platform = graph.platform
    after = _scored(platform, DAY_A)
    predictions_version = platform.predictions.open().version()
    catalog = read_all(platform.layout.catalog)
    rerecord = platform.score(DAY_A, asset_selection=[platform.scope.catalog])
    return Rerun(
        graph,
        after,
        predictions_version,
        read_day(platform.predictions, DAY_B),
        catalog,
        read_all(platform.layout.catalog),
        rerecord,
    )


def _catalog_row(
    catalog: pa.Table, dataset: str, day: dt.date, version: int | str
) -> dict[str, Any]:
    wanted = ("credit_risk", dataset, day.isoformat(), int(version))
    rows = [
        row
        for row in catalog.to_pylist()
        if (row["deployment"], row["dataset"], row["partition"], row["delta_version"]) == wanted
    ]
    assert len(rows) == 1, f"{dataset} {day} v{version}: {len(rows)} catalog rows"
    return rows[0]


def _keys(table: pa.Table) -> list[Any]:
    return table.column(KEY_COLUMN).to_pylist()


# --------------------------------------------------------------------------- first runs


@pytest.mark.parametrize("day", DAYS)
def test_every_validated_row_is_scored_once(graph: Graph, day: dt.date) -> None:
    scored = graph.scored[day]
    meta = scored.metadata["validated_features"]
    assert meta["rows_in"] == ROWS_PER_DAY
    assert 0 < meta["rows_quarantined"] < ROWS_PER_DAY * 0.01  # the generator's planted defects
    assert scored.validated.num_rows == ROWS_PER_DAY - meta["rows_quarantined"]
    assert scored.predictions.num_rows == scored.validated.num_rows
    assert len(set(_keys(scored.predictions))) == scored.predictions.num_rows
    assert set(_keys(scored.predictions)) == set(_keys(scored.validated))
    assert set(scored.predictions.column("event_date").to_pylist()) == {day}


@pytest.mark.parametrize("day", DAYS)
def test_scores_are_probabilities(graph: Graph, day: dt.date) -> None:
    scores = graph.scored[day].predictions.column(SCORE_COLUMN).to_numpy()
    assert np.isfinite(scores).all()
    assert ((scores >= 0) & (scores <= 1)).all()
    assert scores.std() > 0  # a real model, not a constant


@pytest.mark.parametrize("day", DAYS)
def test_predictions_name_the_champion_and_the_run(graph: Graph, day: dt.date) -> None:
    scored = graph.scored[day]
    table = scored.predictions
    assert [(f.name, f.type) for f in table.schema] == [(f.name, f.type) for f in PREDICTION_SCHEMA]
    assert graph.champion == 1
    assert set(table.column("model_version").to_pylist()) == {graph.champion}
    assert set(table.column("model_name").to_pylist()) == {graph.platform.model_name}
    assert set(table.column("run_id").to_pylist()) == {scored.result.run_id}
    assert table.column("scored_at").null_count == 0


@pytest.mark.parametrize("day", DAYS)
def test_quarantine_rows_carry_their_reasons(graph: Graph, day: dt.date) -> None:
    scored = graph.scored[day]
    quarantine = scored.quarantine
    assert quarantine.num_rows == scored.metadata["validated_features"]["rows_quarantined"]
    assert quarantine.column(REASON_COLUMN).null_count == 0
    assert all(reason for reason in quarantine.column(REASON_COLUMN).to_pylist())
    # A quarantined key is never scored, unless it is the kept first copy of a duplicate.
    duplicates = pc.match_substring(quarantine.column(REASON_COLUMN), "duplicate")
    rejected = set(_keys(quarantine.filter(pc.invert(duplicates))))
    assert rejected.isdisjoint(_keys(scored.predictions))


@pytest.mark.parametrize("day", DAYS)
def test_materialization_metadata(graph: Graph, day: dt.date) -> None:
    platform, scored = graph.platform, graph.scored[day]
    predictions = scored.metadata["predictions"]
    for key in ("dagster/row_count", "seconds", "rows_per_second", "delta_version", "dagster/uri"):
        assert key in predictions, key
    assert predictions["dagster/row_count"] == scored.predictions.num_rows
    assert predictions["seconds"] > 0
    assert predictions["rows_per_second"] > 0
    assert predictions["dagster/uri"] == platform.predictions.uri
    assert predictions["model_version"] == str(graph.champion)  # an identifier: text
    assert predictions["model_name"] == platform.model_name
    assert predictions["validated_rows"] == scored.validated.num_rows

    validated = scored.metadata["validated_features"]
    for key in ("dagster/row_count", "seconds", "rows_per_second", "delta_version", "dagster/uri"):
        assert key in validated, key
    assert validated["dagster/row_count"] == scored.validated.num_rows
    assert validated["dagster/uri"] == platform.tables.validated.uri

    model = scored.metadata["model_versions"]
    assert model["model_version"] == str(graph.champion)
    assert model["fell_back"] is False
    assert model["alias_holder_version"] == str(graph.champion)
    if day == DAYS[-1]:  # an earlier run compiled the version; this one found it compiled
        assert model["compiled_from_cache"] is True
        assert model["compile_seconds"] == 0

    evaluations = check_evaluations(scored.result)
    failed = {name: e.description for name, e in evaluations.items() if not e.passed}
    assert not failed
    assert {
        "schema_matches_contract",
        "null_rates_within_limits",
        "champion_passes_validation",
        "row_count_matches_validated",
        "scores_in_unit_range",
        "score_drift_psi",
        "lineage_complete",
    } <= set(evaluations)


@pytest.mark.parametrize("day", DAYS)
def test_delta_commits_belong_to_the_run(graph: Graph, day: dt.date) -> None:
    platform, scored = graph.platform, graph.scored[day]
    run_id = scored.result.run_id
    for location, key in (
        (platform.predictions, "predictions"),
        (platform.tables.validated, "validated_features"),
    ):
        commit = commit_info(location, scored.metadata[key]["delta_version"])
        assert commit["dagster_run_id"] == run_id
        assert commit["partition"] == day.isoformat()
    quarantine_version = scored.metadata["validated_features"]["quarantine_delta_version"]
    assert commit_info(platform.tables.quarantine, quarantine_version)["dagster_run_id"] == run_id


@pytest.mark.parametrize("day", DAYS)
def test_catalog_links_predictions_to_validated_to_features_and_model(
    graph: Graph, day: dt.date
) -> None:
    platform, scored = graph.platform, graph.scored[day]
    meta = scored.metadata
    run_id = scored.result.run_id
    catalog = graph.catalog

    prediction = _catalog_row(catalog, "predictions", day, meta["predictions"]["delta_version"])
    validated = _catalog_row(
        catalog, "validated_features", day, meta["validated_features"]["delta_version"]
    )
    quarantine = _catalog_row(
        catalog,
        "quarantine",
        day,
        meta["validated_features"]["quarantine_delta_version"],
    )

    # predictions -> validated -> feature table, and the model version
    assert prediction["upstream_dataset"] == "validated_features"
    assert prediction["upstream_delta_version"] == validated["delta_version"]
    assert prediction["model_name"] == platform.model_name
    assert prediction["model_version"] == graph.champion
    assert prediction["rows"] == scored.predictions.num_rows
    assert prediction["table_uri"] == platform.predictions.uri
    assert prediction["schema_hash"] == schema_hash(table_schema(platform.predictions))
    assert validated["upstream_dataset"] == "feature_tables"
    assert validated["upstream_delta_version"] == graph.features_version
    assert validated["rows"] == scored.validated.num_rows
    for row in (prediction, validated, quarantine):
        assert row["feature_table_version"] == graph.features_version
        assert row["run_id"] == run_id
    assert quarantine["rows"] == scored.quarantine.num_rows
    assert validated["model_version"] is None and quarantine["model_version"] is None
    assert meta["catalog_entries"]["dagster/row_count"] == 3
    shown = {record.data["dataset"] for record in meta["catalog_entries"]["entries"].records}
    assert shown == {"predictions", "validated_features", "quarantine"}


def test_catalog_has_one_row_per_dataset_version(graph: Graph) -> None:
    keys = [
        (row["deployment"], row["dataset"], row["partition"], row["delta_version"])
        for row in graph.catalog.to_pylist()
    ]
    assert len(keys) == len(set(keys)) == 3 * len(DAYS)
    assert {key[0] for key in keys} == {"credit_risk"}


def test_each_partition_in_its_own_delta_commit(graph: Graph) -> None:
    versions = [graph.scored[day].metadata["predictions"]["delta_version"] for day in DAYS]
    assert versions == ["0", "1"]  # identifiers: text, not plotted
    assert graph.predictions_version == 1


# --------------------------------------------------------------------------- rerun


def test_rerun_replaces_the_partition(rerun: Rerun) -> None:
    before, after = rerun.before.scored[DAY_A], rerun.after
    assert after.predictions.num_rows == before.predictions.num_rows
    assert len(set(_keys(after.predictions))) == after.predictions.num_rows
    assert after.validated.num_rows == before.validated.num_rows
    assert after.quarantine.num_rows == before.quarantine.num_rows
    assert set(after.predictions.column("run_id").to_pylist()) == {after.result.run_id}
    # Same data, same model: same scores.
    order_before = pc.sort_indices(before.predictions, [(KEY_COLUMN, "ascending")])
    order_after = pc.sort_indices(after.predictions, [(KEY_COLUMN, "ascending")])
    np.testing.assert_array_equal(
        before.predictions.take(order_before).column(SCORE_COLUMN).to_numpy(),
        after.predictions.take(order_after).column(SCORE_COLUMN).to_numpy(),
    )


def test_rerun_commits_a_new_version_and_leaves_the_other_day(rerun: Rerun) -> None:
    version = int(rerun.after.metadata["predictions"]["delta_version"])
    assert version > rerun.before.predictions_version
    assert version == rerun.predictions_version
    assert rerun.other_day.equals(rerun.before.scored[DAY_B].predictions)


def test_rerun_is_cataloged_once(rerun: Rerun) -> None:
    meta = rerun.after.metadata
    row = _catalog_row(rerun.catalog, "predictions", DAY_A, meta["predictions"]["delta_version"])
    assert row["run_id"] == rerun.after.result.run_id
    assert row["upstream_delta_version"] == int(meta["predictions"]["validated_version"])
    # The first run's entry stays: the catalog is the history of versions.
    old_version = rerun.before.scored[DAY_A].metadata["predictions"]["delta_version"]
    _catalog_row(rerun.catalog, "predictions", DAY_A, old_version)
    assert rerun.catalog.num_rows == rerun.before.catalog.num_rows + 3

    assert rerun.rerecord.success
    assert set(materializations(rerun.rerecord)) == {"catalog_entries"}
    assert rerun.catalog_after_rerecord.num_rows == rerun.catalog.num_rows
    keys = [
        (r["deployment"], r["dataset"], r["partition"], r["delta_version"])
        for r in rerun.catalog_after_rerecord.to_pylist()
    ]
    assert len(keys) == len(set(keys))


@pytest.mark.parametrize("day", DAYS)
def test_scoring_runs_are_logged_back_to_mlflow(graph: Graph, day: dt.date) -> None:
    """The model's MLflow page shows where it was used: one run per scoring run."""
    scored = graph.scored[day]
    client = graph.platform.registry.client
    run_id = scored.metadata["predictions"]["mlflow_scoring_run"]
    run = client.get_run(run_id)
    assert run.data.tags["dagster_run_id"] == scored.result.run_id
    assert run.data.tags["model_version"] == str(graph.champion)
    assert run.data.params["partitions"] == day.isoformat()
    assert run.data.metrics["rows"] == scored.predictions.num_rows
    assert run.data.metrics["rows_per_second"] > 0
    assert 0 <= run.data.metrics["score_p50"] <= 1
    assert run.info.status == "FINISHED"
    version = client.get_model_version(graph.platform.model_name, str(graph.champion))
    latest = client.get_run(version.tags["last_scoring_run"])  # the newest scoring run
    assert latest.data.tags["model_version"] == str(graph.champion)
    assert latest.info.start_time >= run.info.start_time


def _metadata_values(result: dg.ExecuteInProcessResult, name: str) -> dict[str, dg.MetadataValue]:
    """The metadata entries (typed, not their values) of the run's ``name`` materialization."""
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        if materialization.asset_key.path[-1] == name:
            return dict(materialization.metadata)
    raise AssertionError(f"no {name} materialization")


def test_identifiers_are_text_and_measurements_are_plotted(graph: Graph) -> None:
    """The UI plots numbers: versions and ids are text, rows and seconds numbers; without an
    MLflow UI a ``models:/`` URI is text, not a link that opens nothing."""
    result = graph.scored[DAY_A].result
    predictions = _metadata_values(result, "predictions")
    for key in ("delta_version", "validated_version", "model_version", "run_partitions"):
        assert isinstance(predictions[key], dg.TextMetadataValue), key
    for key in ("dagster/row_count", "seconds", "rows_per_second"):
        assert isinstance(predictions[key], dg.IntMetadataValue | dg.FloatMetadataValue), key
    assert isinstance(predictions["model_load_seconds"], dg.TextMetadataValue)
    model = _metadata_values(result, "model_versions")
    assert isinstance(model["model_uri"], dg.TextMetadataValue)
    assert model["model_uri"].value.startswith("models:/")
    inputs = model["signature_inputs"].value
    assert isinstance(inputs, dg.TableSchema)
    assert {column.name for column in inputs.columns} >= {"annual_income", "age"}


def test_mlflow_links_open_the_mlflow_ui(graph: Graph) -> None:
    """With ``mlflow.ui-url`` set, model versions and runs link to their MLflow UI pages."""
    platform = graph.platform
    mlflow = platform.settings.application.mlflow
    registry = ModelRegistryResource(
        tracking_uri=mlflow.tracking_uri,
        artifact_root=mlflow.artifact_root,
        experiment=mlflow.experiment,
        model_cache_dir=str(platform.settings.model_cache_dir),
        ui_url="http://mlflow.example:5000/",
    )
    version = platform.registry.version(platform.model_name, graph.champion)
    assert registry.link(version) == (
        f"http://mlflow.example:5000/#/models/{platform.model_name}/versions/{graph.champion}"
    )
    assert version.run_id is not None
    run = platform.registry.client.get_run(version.run_id)
    assert registry.run_link(run.info.run_id) == (
        f"http://mlflow.example:5000/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    )
    assert isinstance(display.link(registry.link(version)), dg.UrlMetadataValue)
