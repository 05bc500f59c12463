"""Bad feature partitions are stopped at validation: the blocking check fails naming the
problem, the partition is not scored, a previously validated version of it stays as it was
(last known good), and other days still score."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from batch_inference_platform.lib.features.synthetic import generate_partition, raw_schema
from batch_inference_platform.lib.lake.tables import (
    DeltaLocation,
    count_partition,
    read_partition,
    replace_partition,
)
from batch_inference_platform.lib.quality.rules import REASON_COLUMN

from .conftest import (
    DAILY,
    DAY_A,
    DAY_B,
    ROWS_PER_DAY,
    Platform,
    PlatformFactory,
    check_evaluations,
    failure_messages,
    materializations,
    read_day,
)

DAY_C = dt.date(2026, 11, 4)
COLUMN = "annual_income"


def _rewrite(
    location: DeltaLocation,
    day: dt.date,
    schema: pa.Schema,
    change: Callable[[pa.RecordBatch], pa.Array],
) -> None:
    """Replace ``COLUMN`` of every row of ``day`` with ``change(batch)``, in ``schema``."""
    index = schema.get_field_index(COLUMN)
    batches = [
        pa.RecordBatch.from_arrays(
            [change(b) if i == index else b.column(i) for i in range(b.num_columns)],
            schema=schema,
        )
        for b in read_partition(location, DAILY, day.isoformat())
    ]
    replace_partition(location, DAILY, day.isoformat(), batches, schema)


def _all_null(batch: pa.RecordBatch) -> pa.Array:
    return pa.nulls(batch.num_rows, raw_schema().field(COLUMN).type)


def _started_steps(result: dg.ExecuteInProcessResult) -> set[str | None]:
    return {e.step_key for e in result.all_events if e.event_type_value == "STEP_START"}


def _rows(location: DeltaLocation, day: dt.date) -> int:
    return count_partition(location, DAILY, day.isoformat())


@dataclass
class NullRuns:
    platform: Platform
    runs: dict[dt.date, dg.ExecuteInProcessResult]
    predictions_version_before: int
    good_c_rows: int


@pytest.fixture(scope="module")
def null_runs(make_platform: PlatformFactory) -> NullRuns:
    """A and B generated; B's required ``annual_income`` made all-null, then both scored.

    C is scored while good first, then made all-null and scored again.
    """
    platform = make_platform("bad_partitions")
    for day in (DAY_A, DAY_B, DAY_C):
        assert platform.generate(day).success
    assert platform.train(training_partition=DAY_A.isoformat()).success
    assert platform.score(DAY_C).success
    good_c_rows = _rows(platform.predictions, DAY_C)
    assert good_c_rows > 0

    features = platform.tables.features
    for day in (DAY_B, DAY_C):
        _rewrite(features, day, raw_schema(), _all_null)
        assert read_day(features, day).column(COLUMN).null_count == ROWS_PER_DAY
    assert read_day(features, DAY_A).column(COLUMN).null_count == 0

    version_before = platform.predictions.open().version()
    runs = {day: platform.score(day) for day in (DAY_A, DAY_B, DAY_C)}
    return NullRuns(platform, runs, version_before, good_c_rows)


@pytest.mark.parametrize("day", [DAY_B, DAY_C])
def test_null_column_fails_the_blocking_null_rate_check(null_runs: NullRuns, day: dt.date) -> None:
    evaluations = check_evaluations(null_runs.runs[day])
    check = evaluations["null_rates_within_limits"]
    assert check.passed is False
    assert check.blocking is True
    assert check.severity == dg.AssetCheckSeverity.ERROR
    assert check.description is not None
    assert f"{COLUMN}: 100.0% null" in check.description
    assert evaluations["schema_matches_contract"].passed is True


@pytest.mark.parametrize("day", [DAY_B, DAY_C])
def test_null_partition_is_not_scored(null_runs: NullRuns, day: dt.date) -> None:
    platform, result = null_runs.platform, null_runs.runs[day]
    assert not result.success
    assert "null_rates_within_limits" in failure_messages(result)
    assert set(materializations(result)) == {"validated_features"}
    assert _started_steps(result) == {platform.op("validated_features")}
    assert materializations(result)["validated_features"]["dagster/row_count"] == 0
    # Every row is quarantined, each naming the null required column.
    quarantine = read_day(platform.tables.quarantine, day)
    assert quarantine.num_rows == ROWS_PER_DAY
    assert pc.all(pc.match_substring(quarantine.column(REASON_COLUMN), f"{COLUMN} is null")).as_py()


def test_never_scored_bad_partition_has_no_validated_rows_or_predictions(
    null_runs: NullRuns,
) -> None:
    assert _rows(null_runs.platform.tables.validated, DAY_B) == 0
    assert _rows(null_runs.platform.predictions, DAY_B) == 0


def test_failed_revalidation_keeps_the_last_good_version(null_runs: NullRuns) -> None:
    """C passed once; its corrupted reload fails and replaces neither validated nor scores."""
    platform = null_runs.platform
    assert _rows(platform.tables.validated, DAY_C) == null_runs.good_c_rows
    assert _rows(platform.predictions, DAY_C) == null_runs.good_c_rows
    day = materializations(null_runs.runs[DAY_C])["validated_features"]
    assert day["passed"] is False and day["dagster/row_count"] == 0
    assert "delta_version" not in day  # nothing validated was written


def test_failed_runs_commit_nothing_to_predictions(null_runs: NullRuns) -> None:
    failed = {null_runs.runs[day].run_id for day in (DAY_B, DAY_C)}
    writers = {c.get("dagster_run_id") for c in null_runs.platform.predictions.open().history()}
    assert writers.isdisjoint(failed)
    assert null_runs.runs[DAY_A].run_id in writers


def test_good_partition_is_still_scored(null_runs: NullRuns) -> None:
    platform, result = null_runs.platform, null_runs.runs[DAY_A]
    assert result.success
    assert all(e.passed for e in result.get_asset_check_evaluations())
    validated = _rows(platform.tables.validated, DAY_A)
    assert validated > ROWS_PER_DAY * 0.99
    assert _rows(platform.predictions, DAY_A) == validated
    assert int(materializations(result)["predictions"]["delta_version"]) > (
        null_runs.predictions_version_before
    )


# --------------------------------------------------------------------------- wrong type


@pytest.fixture(scope="module")
def wrong_type(make_platform: PlatformFactory) -> tuple[Platform, dg.ExecuteInProcessResult]:
    """A separate lake whose feature table stores ``annual_income`` as strings."""
    platform = make_platform("bad_dtype")
    raw = raw_schema()
    index = raw.get_field_index(COLUMN)
    schema = raw.set(index, pa.field(COLUMN, pa.string()))
    batches = [
        pa.RecordBatch.from_arrays(
            [
                pc.cast(b.column(i), pa.string()) if i == index else b.column(i)
                for i in range(b.num_columns)
            ],
            schema=schema,
        )
        for b in generate_partition(DAY_B, ROWS_PER_DAY)
    ]
    replace_partition(platform.tables.features, DAILY, DAY_B.isoformat(), batches, schema)
    return platform, platform.score(DAY_B)


def test_wrong_type_fails_the_schema_contract(
    wrong_type: tuple[Platform, dg.ExecuteInProcessResult],
) -> None:
    _, result = wrong_type
    assert "schema_matches_contract" in failure_messages(result)
    check = check_evaluations(result)["schema_matches_contract"]
    assert check.passed is False
    assert check.blocking is True
    assert check.description == f"{DAY_B.isoformat()}: column {COLUMN!r} is string, expected float"
    assert set(materializations(result)) == {"validated_features"}
    row_checks = {n: e for n, e in check_evaluations(result).items() if n != check.check_name}
    assert len(row_checks) == 4
    assert all(
        not e.passed and "Not evaluated" in (e.description or "") for e in row_checks.values()
    )


def test_wrong_type_partition_is_not_scored(
    wrong_type: tuple[Platform, dg.ExecuteInProcessResult],
) -> None:
    platform, result = wrong_type
    assert not result.success
    assert platform.op("validated_features") in result.get_failed_step_keys()
    assert _started_steps(result) == {platform.op("validated_features")}
    assert _rows(platform.tables.validated, DAY_B) == 0
    assert _rows(platform.predictions, DAY_B) == 0
    assert not platform.predictions.exists()
    assert not platform.layout.catalog.exists()
