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

from batch_inference_platform.lib.features.synthetic import raw_schema
from batch_inference_platform.lib.lake.lineage import latest_commit
from batch_inference_platform.lib.lake.tables import (
    DeltaLocation,
    count_partition,
    read_partition,
    replace_partition,
)
from batch_inference_platform.lib.registry import loader
from batch_inference_platform.lib.scoring.outputs import OutputKind

from .conftest import (
    DAILY,
    DAY_A,
    DAY_B,
    Platform,
    PlatformFactory,
    check_evaluations,
    failure_messages,
    materializations,
    read_all,
)

DAY_C = dt.date(2026, 11, 4)
DAYS = (DAY_A, DAY_B, DAY_C)
BAD_DAY = DAY_B
GOOD_DAYS = (DAY_A, DAY_C)
COLUMN = "annual_income"
JOB = "score_partition_job"


def _backfill(platform: Platform) -> dg.ExecuteInProcessResult:
    """One run of the scoring job over DAYS, as a single-run backfill launches it."""
    return platform.score_range(DAYS[0], DAYS[-1], JOB)


def _partition_materializations(
    result: dg.ExecuteInProcessResult, asset: dg.AssetKey
) -> dict[str | None, dict[str, Any]]:
    """Metadata of each materialization of ``asset`` in the run, keyed by partition."""
    found = {}
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        if materialization.asset_key == asset:
            found[materialization.partition] = {
                k: v.value for k, v in materialization.metadata.items()
            }
    return found


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
    for day in DAYS:
        assert platform.generate(day).success
    assert platform.train(training_partition=DAY_A.isoformat()).success
    result = _backfill(platform)
    assert result.success, failure_messages(result)
    registry_uri = platform.registry.registry_uri
    return Backfill(
        platform=platform,
        result=result,
        runs=len(platform.instance.get_runs(dg.RunsFilter(job_name=platform.scope.job_name(JOB)))),
        metadata=materializations(result),
        predictions_by_day=_partition_materializations(result, platform.scope.predictions),
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
    assert backfill.metadata["predictions"]["dagster/row_count"] == sum(
        validated for validated, _ in backfill.rows.values()
    )


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


def test_metadata_lists_every_partition(backfill: Backfill) -> None:
    predictions = backfill.metadata["predictions"]
    partitions = predictions["partitions"]
    assert sorted(partitions) == [day.isoformat() for day in DAYS]
    versions = {c["partition"]: c["version"] for c in backfill.commits}
    for day in DAYS:
        entry = partitions[day.isoformat()]
        assert entry["rows"] == backfill.rows[day][1]
        assert entry["delta_version"] == versions[day.isoformat()]
    assert predictions["delta_version"] == max(versions.values())
    validated = backfill.metadata["validated_features"]["partitions"]
    assert sorted(validated) == [day.isoformat() for day in DAYS]
    assert all(validated[day.isoformat()]["passed"] for day in DAYS)


def test_checks_are_combined_across_the_days(backfill: Backfill) -> None:
    evaluations = check_evaluations(backfill.result)
    assert all(e.passed for e in evaluations.values()), {
        n: e.description for n, e in evaluations.items() if not e.passed
    }
    for name in ("row_count_matches_validated", "no_null_scores", "scores_in_unit_range"):
        assert evaluations[name].description == "All 3 partitions passed."
    assert evaluations["null_rates_within_limits"].description == "All 3 partitions passed."
    assert evaluations["lineage_complete"].description == "All 3 partitions passed."


def test_the_model_is_loaded_once(backfill: Backfill) -> None:
    platform = backfill.platform
    model = backfill.metadata["model_versions"]
    predictions = backfill.metadata["predictions"]
    assert model["scoring_engine"] == predictions["scoring_engine"] == "lleaves"
    assert model["compiled_from_cache"] is False
    assert predictions["model_load_seconds"] >= 0
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
    assert backfill.metadata["catalog_entries"]["entries"] == 3 * len(DAYS)
    predictions = backfill.metadata["predictions"]["partitions"]
    validated = backfill.metadata["validated_features"]["partitions"]
    assert {r["deployment"] for r in rows} == {"credit_risk"}
    for day in DAYS:
        by_dataset = {r["dataset"]: r for r in rows if r["partition"] == day.isoformat()}
        assert set(by_dataset) == {"validated_features", "quarantine", "predictions"}, day
        scored, checked = by_dataset["predictions"], by_dataset["validated_features"]
        assert scored["delta_version"] == predictions[day.isoformat()]["delta_version"]
        assert scored["upstream_dataset"] == "validated_features"
        # Each day's predictions name the validated commit that wrote that day.
        assert scored["upstream_delta_version"] == checked["delta_version"]
        assert checked["delta_version"] == validated[day.isoformat()]["delta_version"]
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
    check = check_evaluations(result)["null_rates_within_limits"]
    assert check.passed is False
    assert check.blocking is True
    assert check.description is not None
    assert BAD_DAY.isoformat() in check.description
    assert f"{COLUMN}: 100.0% null" in check.description
    assert all(day.isoformat() not in check.description for day in GOOD_DAYS)


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

    partitions = materializations(result)["validated_features"]["partitions"]
    assert partitions[BAD_DAY.isoformat()]["passed"] is False
    assert partitions[BAD_DAY.isoformat()]["validated_rows"] is None
    for day in GOOD_DAYS:
        assert partitions[day.isoformat()]["passed"] is True
        assert partitions[day.isoformat()]["validated_rows"] > 0


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
