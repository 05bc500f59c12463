"""A backfill is one Dagster run over a range of daily partitions (``SINGLE_RUN_BACKFILL``).

The model is loaded once for the run, each partition is still replaced in its own Delta commit
stamped with its day and the run, and Dagster records a materialization per partition. When one
day of the range is bad, the blocking validation check stops the whole run before scoring: the
good days are validated, the bad day keeps its last good version, and nothing is scored.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import dagster as dg
import pyarrow as pa
import pytest

from batch_inference_platform.defs.inference.assets import QUANTILES
from batch_inference_platform.lib.features.synthetic import raw_schema
from batch_inference_platform.lib.lake.lineage import latest_commit
from batch_inference_platform.lib.lake.tables import (
    DeltaLocation,
    count_partition,
    read_partition,
    replace_partition,
)
from batch_inference_platform.lib.registry import loader
from batch_inference_platform.lib.scoring.outputs import OutputKind, OutputSpec
from batch_inference_platform.lib.scoring.stats import ScoreStats

from .conftest import (
    DAILY,
    DAY_A,
    DAY_B,
    Platform,
    PlatformFactory,
    failure_messages,
    materializations,
    partition_materializations,
    read_all,
)

DAY_C = dt.date(2026, 11, 4)
DAYS = (DAY_A, DAY_B, DAY_C)
BAD_DAY = DAY_B
GOOD_DAYS = (DAY_A, DAY_C)
COLUMN = "annual_income"
JOB = "score_partition_job"
ROWS_OF_DAYS = (3_000, 4_200, 2_400)
"""Rows generated for each of DAYS: different, so a day showing another's figures is caught."""


def _backfill(platform: Platform) -> dg.ExecuteInProcessResult:
    """One run of the scoring job over DAYS, as a single-run backfill launches it."""
    return platform.score_range(DAYS[0], DAYS[-1], JOB)


def _latest_predictions_record(platform: Platform, day: dt.date) -> dg.EventLogRecord:
    records = platform.instance.fetch_materializations(
        dg.AssetRecordsFilter(
            asset_key=platform.scope.predictions, asset_partitions=[day.isoformat()]
        ),
        limit=1,
    ).records
    assert len(records) == 1, f"no predictions materialization recorded for {day}"
    return records[0]


def _commits_of_run(location: DeltaLocation, run_id: str) -> list[dict[str, Any]]:
    return [c for c in location.open().history() if c.get("dagster_run_id") == run_id]


def _started_steps(result: dg.ExecuteInProcessResult) -> set[str | None]:
    return {e.step_key for e in result.all_events if e.event_type_value == "STEP_START"}


# --------------------------------------------------------------------------- a good backfill


@dataclass
class Backfill:
    platform: Platform
    result: dg.ExecuteInProcessResult
    runs: int
    metadata: dict[str, dict[str, Any]]
    predictions_by_day: dict[str | None, dict[str, Any]]
    validated_by_day: dict[str | None, dict[str, Any]]
    catalog_by_day: dict[str | None, dict[str, Any]]
    rows: dict[dt.date, tuple[int, int]]
    """(validated rows, prediction rows) per day."""
    commits: list[dict[str, Any]]
    records: dict[dt.date, dg.EventLogRecord]
    catalog: pa.Table
    fast_keys: list[tuple[Any, ...]]
    native_keys: list[tuple[str, str, int]]


@pytest.fixture(scope="module")
def backfill(make_platform: PlatformFactory) -> Backfill:
    """Three days generated, the model trained on the first, then one run over all three."""
    platform = make_platform("backfill")
    for day, rows in zip(DAYS, ROWS_OF_DAYS, strict=True):
        assert platform.generate(day, rows=rows).success
    assert platform.train(training_partition=DAY_A.isoformat()).success
    result = _backfill(platform)
    assert result.success, failure_messages(result)
    registry_uri = platform.registry.registry_uri
    return Backfill(
        platform=platform,
        result=result,
        runs=len(platform.instance.get_runs(dg.RunsFilter(job_name=platform.scope.job_name(JOB)))),
        metadata=materializations(result),
        predictions_by_day=partition_materializations(result, platform.scope.predictions),
        validated_by_day=partition_materializations(result, platform.scope.validated),
        catalog_by_day=partition_materializations(result, platform.scope.catalog),
        rows={
            day: (
                count_partition(platform.tables.validated, DAILY, day.isoformat()),
                count_partition(platform.predictions, DAILY, day.isoformat()),
            )
            for day in DAYS
        },
        commits=_commits_of_run(platform.predictions, result.run_id),
        records={day: _latest_predictions_record(platform, day) for day in DAYS},
        catalog=read_all(platform.layout.catalog),
        fast_keys=[k for k in loader._serving if k[0] == registry_uri and k[-1] != "None"],
        native_keys=[k for k in loader._loaded if k[0] == registry_uri],
    )


def test_one_run_covers_the_range(backfill: Backfill) -> None:
    assert backfill.runs == 1
    tags = backfill.result.dagster_run.tags
    assert tags["dagster/asset_partition_range_start"] == DAYS[0].isoformat()
    assert tags["dagster/asset_partition_range_end"] == DAYS[-1].isoformat()
    # Each asset's step ran once for the whole range.
    started = [
        str(e.step_key) for e in backfill.result.all_events if e.event_type_value == "STEP_START"
    ]
    platform = backfill.platform
    assert sorted(started) == [
        platform.op("archived_features"),
        platform.op("catalog_entries"),
        platform.op("model_versions"),
        platform.op("predictions"),
        platform.op("validated_features"),
    ]


def test_every_day_is_scored_in_full(backfill: Backfill) -> None:
    for day in DAYS:
        validated, predicted = backfill.rows[day]
        assert validated > 0, day
        assert predicted == validated, day
    assert len({validated for validated, _ in backfill.rows.values()}) == len(DAYS)


def test_each_day_is_its_own_delta_commit_of_the_run(backfill: Backfill) -> None:
    commits = backfill.commits
    assert len(commits) == 3
    assert sorted(c["partition"] for c in commits) == [day.isoformat() for day in DAYS]
    assert len({c["version"] for c in commits}) == 3
    for commit in commits:
        day = dt.date.fromisoformat(commit["partition"])
        assert commit["dagster_run_id"] == backfill.result.run_id
        assert commit["model_version"] == "1"
        assert int(commit["operationMetrics"]["num_added_rows"]) == backfill.rows[day][1]


def _day_quantiles(platform: Platform, day: dt.date) -> dict[str, float]:
    """The day's score quantiles computed directly from its prediction rows."""
    stats = ScoreStats()
    for batch in read_partition(platform.predictions, DAILY, day.isoformat()):
        stats.add(batch, OutputSpec(OutputKind.PROBABILITY))
    return {name: round(value, 6) for name, value in stats.quantiles(QUANTILES).items()}


def _histogram_rows(markdown: str) -> list[int]:
    """The row counts of a score-distribution markdown table's bins."""
    bins = [line for line in markdown.splitlines() if line.startswith("| ") and "%" in line]
    return [int(line.split("|")[2].strip().replace(",", "")) for line in bins]


def test_each_days_materialization_carries_its_own_figures(backfill: Backfill) -> None:
    """A range run records each day as if it had run alone: its rows, Delta versions,
    timings and score distribution - never the range's totals."""
    versions = {c["partition"]: c["version"] for c in backfill.commits}
    platform = backfill.platform
    for day, generated in zip(DAYS, ROWS_OF_DAYS, strict=True):
        key = day.isoformat()
        validated_rows, predicted_rows = backfill.rows[day]
        scored = backfill.predictions_by_day[key]
        assert scored["dagster/row_count"] == predicted_rows, day
        assert scored["validated_rows"] == validated_rows, day
        assert scored["delta_version"] == str(versions[key]), day
        assert scored["model_version"] == "1"
        assert scored["seconds"] > 0 and scored["rows_per_second"] > 0
        assert scored["score_quantiles"] == _day_quantiles(platform, day), day
        bins = _histogram_rows(scored["score_distribution"])
        assert len(bins) == 10 and sum(bins) == predicted_rows, day
        validated = backfill.validated_by_day[key]
        assert validated["dagster/row_count"] == validated_rows, day
        assert validated["rows_in"] == generated, day
        checked = latest_commit(platform.tables.validated, key)
        assert checked is not None and validated["delta_version"] == str(checked.version)
        catalogued = backfill.catalog_by_day[key]
        assert catalogued["dagster/row_count"] == 3, day
        datasets = {record.data["dataset"] for record in catalogued["entries"].records}
        assert datasets == {"validated_features", "quarantine", "predictions"}
    # What the days share is the same on each: the table and its columns.
    assert {m["dagster/uri"] for m in backfill.predictions_by_day.values()} == {
        platform.predictions.uri
    }
    schema = backfill.predictions_by_day[DAYS[0].isoformat()]["dagster/column_schema"]
    assert {"customer_id", "event_date", "score", "model_version"} <= {
        column.name for column in schema.columns
    }


def test_each_days_checks_carry_its_own_verdict_and_figures(backfill: Backfill) -> None:
    by_check: dict[str, dict[str | None, Any]] = {}
    for evaluation in backfill.result.get_asset_check_evaluations():
        by_check.setdefault(evaluation.check_name, {})[evaluation.partition] = evaluation
    keys = {day.isoformat() for day in DAYS}
    for name in (
        "row_count_matches_validated",
        "no_null_scores",
        "scores_in_unit_range",
        "score_drift_psi",
        "schema_matches_contract",
        "row_count_at_least_minimum",
        "null_rates_within_limits",
        "lineage_complete",
    ):
        assert set(by_check[name]) == keys, name  # one evaluation per day, none for the range
        assert all(e.passed for e in by_check[name].values()), name
    for day in DAYS:
        key = day.isoformat()
        validated_rows, predicted_rows = backfill.rows[day]
        rows = by_check["row_count_matches_validated"][key]
        assert rows.metadata["scored_rows"].value == predicted_rows
        assert rows.metadata["validated_rows"].value == validated_rows
        assert rows.metadata["partition"].value == key
        assert rows.description.startswith(f"{key}: {predicted_rows:,} scored")
        minimum = by_check["row_count_at_least_minimum"][key]
        assert minimum.description.startswith(f"{key}: ")
        assert minimum.metadata["partition"].value == key
    # Each day's drift is its own PSI against the earliest other scored day.
    drift = by_check["score_drift_psi"]
    for day in DAYS:
        reference = DAYS[1] if day == DAYS[0] else DAYS[0]
        assert drift[day.isoformat()].metadata["reference_partition"].value == reference.isoformat()
        psi = drift[day.isoformat()].metadata["psi"].value
        assert psi == pytest.approx(backfill.predictions_by_day[day.isoformat()]["psi"], abs=1e-6)


def test_every_check_says_what_it_means(backfill: Backfill) -> None:
    specs = [
        spec
        for assets_def in backfill.platform.defs.resolve_asset_graph().assets_defs
        for spec in assets_def.check_specs
    ]
    assert specs
    assert [spec.name for spec in specs if not spec.description] == []


def test_the_model_is_loaded_once(backfill: Backfill) -> None:
    platform = backfill.platform
    model = backfill.metadata["model_versions"]
    predictions = backfill.metadata["predictions"]
    assert model["scoring_engine"] == predictions["scoring_engine"] == "lleaves"
    assert model["compiled_from_cache"] is False
    assert float(predictions["model_load_seconds"]) >= 0  # text: constant within a run
    # One compiled scorer (beside the smoke test's native one) and one loaded model ...
    assert backfill.fast_keys == [
        (
            platform.registry.registry_uri,
            platform.model_name,
            1,
            OutputKind.PROBABILITY,
            "1",
            platform.registry.version(platform.model_name, 1).source,
            str(platform.settings.model_cache_dir),
        )
    ]
    source = platform.registry.version(platform.model_name, 1).source
    assert backfill.native_keys == [
        (platform.registry.registry_uri, platform.model_name, 1, source)
    ]
    # ... and one compiled cache entry on disk.
    entries = list((platform.settings.model_cache_dir / platform.model_name).iterdir())
    assert [e.name.split("-")[0] for e in entries] == ["v1"]


def test_dagster_records_a_materialization_per_partition(backfill: Backfill) -> None:
    assert sorted(p or "" for p in backfill.predictions_by_day) == [d.isoformat() for d in DAYS]
    for day in DAYS:
        record = backfill.records[day]
        assert record.run_id == backfill.result.run_id
        assert record.partition_key == day.isoformat()


def test_catalog_has_lineage_for_every_day(backfill: Backfill) -> None:
    run_id = backfill.result.run_id
    rows = backfill.catalog.to_pylist()
    assert sum(m["dagster/row_count"] for m in backfill.catalog_by_day.values()) == 3 * len(DAYS)
    assert {r["deployment"] for r in rows} == {"credit_risk"}
    for day in DAYS:
        by_dataset = {r["dataset"]: r for r in rows if r["partition"] == day.isoformat()}
        assert set(by_dataset) == {"validated_features", "quarantine", "predictions"}, day
        scored, checked = by_dataset["predictions"], by_dataset["validated_features"]
        assert (
            str(scored["delta_version"])
            == backfill.predictions_by_day[day.isoformat()]["delta_version"]
        )
        assert scored["upstream_dataset"] == "validated_features"
        # Each day's predictions name the validated commit that wrote that day.
        assert scored["upstream_delta_version"] == checked["delta_version"]
        assert (
            str(checked["delta_version"])
            == backfill.validated_by_day[day.isoformat()]["delta_version"]
        )
        assert checked["upstream_dataset"] == "feature_tables"
        assert checked["upstream_delta_version"] is not None
        assert scored["model_version"] == 1
        assert scored["rows"] == backfill.rows[day][1]
        assert all(r["run_id"] == run_id for r in by_dataset.values())


# --------------------------------------------------------------------------- one bad day


def _null_income(location: DeltaLocation, day: dt.date) -> None:
    """Rewrite ``day`` of the feature table with every ``COLUMN`` value null."""
    schema = raw_schema()
    index = schema.get_field_index(COLUMN)
    batches = [
        pa.RecordBatch.from_arrays(
            [
                pa.nulls(b.num_rows, schema.field(COLUMN).type) if i == index else b.column(i)
                for i in range(b.num_columns)
            ],
            schema=schema,
        )
        for b in read_partition(location, DAILY, day.isoformat())
    ]
    replace_partition(location, DAILY, day.isoformat(), batches, schema)


@dataclass
class BadBackfill:
    good: Backfill
    result: dg.ExecuteInProcessResult
    validated_before: dict[dt.date, tuple[int | None, int]]
    """(latest validated commit version, rows) per day before the bad run."""
    predictions_version_before: int
    catalog_version_before: int


@pytest.fixture(scope="module")
def bad_backfill(backfill: Backfill) -> BadBackfill:
    """The same range run again after BAD_DAY's required ``annual_income`` became all null."""
    platform = backfill.platform
    validated = platform.tables.validated
    before = {}
    for day in DAYS:
        commit = latest_commit(validated, day.isoformat())
        before[day] = (
            commit.version if commit else None,
            count_partition(validated, DAILY, day.isoformat()),
        )
    predictions_version = platform.predictions.open().version()
    catalog_version = platform.layout.catalog.open().version()
    _null_income(platform.tables.features, BAD_DAY)
    result = _backfill(platform)
    return BadBackfill(backfill, result, before, predictions_version, catalog_version)


def test_bad_day_fails_the_blocking_check_naming_the_day(bad_backfill: BadBackfill) -> None:
    result = bad_backfill.result
    assert not result.success
    assert "null_rates_within_limits" in failure_messages(result)
    checks = {
        e.partition: e
        for e in result.get_asset_check_evaluations()
        if e.check_name == "null_rates_within_limits"
    }
    assert set(checks) == {day.isoformat() for day in DAYS}
    check = checks[BAD_DAY.isoformat()]
    assert check.passed is False
    assert check.blocking is True
    assert check.description is not None
    assert check.description.startswith(f"{BAD_DAY.isoformat()}: ")
    assert f"{COLUMN}: 100.0% null" in check.description
    assert all(checks[day.isoformat()].passed for day in GOOD_DAYS)


def test_good_days_are_validated_and_the_bad_day_keeps_its_last_good_version(
    bad_backfill: BadBackfill,
) -> None:
    platform, result = bad_backfill.good.platform, bad_backfill.result
    validated = platform.tables.validated
    written = _commits_of_run(validated, result.run_id)
    assert sorted(c["partition"] for c in written) == [d.isoformat() for d in GOOD_DAYS]
    for day in GOOD_DAYS:
        commit = latest_commit(validated, day.isoformat())
        assert commit is not None and commit.run_id == result.run_id
        rows = count_partition(validated, DAILY, day.isoformat())
        assert rows == bad_backfill.validated_before[day][1]
    commit = latest_commit(validated, BAD_DAY.isoformat())
    assert commit is not None
    assert commit.version == bad_backfill.validated_before[BAD_DAY][0]
    assert commit.run_id == bad_backfill.good.result.run_id
    rows = count_partition(validated, DAILY, BAD_DAY.isoformat())
    assert rows == bad_backfill.validated_before[BAD_DAY][1]

    partitions = partition_materializations(result, platform.scope.validated)
    assert partitions[BAD_DAY.isoformat()]["passed"] is False
    assert partitions[BAD_DAY.isoformat()]["dagster/row_count"] == 0
    assert "delta_version" not in partitions[BAD_DAY.isoformat()]
    for day in GOOD_DAYS:
        assert partitions[day.isoformat()]["passed"] is True
        assert partitions[day.isoformat()]["dagster/row_count"] == count_partition(
            validated, DAILY, day.isoformat()
        )


def test_nothing_is_scored_when_a_blocking_check_fails(bad_backfill: BadBackfill) -> None:
    """Dagster skips everything downstream of the failed check - the good days included."""
    platform, result = bad_backfill.good.platform, bad_backfill.result
    assert _started_steps(result) == {platform.op("validated_features")}
    assert set(materializations(result)) == {"validated_features"}
    assert _commits_of_run(platform.predictions, result.run_id) == []
    assert platform.predictions.open().version() == bad_backfill.predictions_version_before
    assert platform.layout.catalog.open().version() == bad_backfill.catalog_version_before
    for day in DAYS:
        rows = count_partition(platform.predictions, DAILY, day.isoformat())
        assert rows == bad_backfill.good.rows[day][1]
        # The latest predictions materialization of every day is still the good backfill's.
        record = _latest_predictions_record(platform, day)
        assert record.run_id == bad_backfill.good.result.run_id
