"""The seed's data failure path, on both engines: an unreadable feature file fails only its
partition; the run scores and commits the other days, then fails with an error report
(partition, file, error) that the UI shows, so the bad day can be repaired and retried."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from .conftest import Platform, PlatformFactory, failure_messages, read_day

DAYS = [dt.date(2026, 11, d) for d in (2, 3, 4)]
BAD_DAY = DAYS[1]


@dataclass
class Partial:
    platform: Platform
    corrupted: str
    result: dg.ExecuteInProcessResult


def _corrupt(platform: Platform, day: dt.date) -> str:
    """Overwrite the middle of the day's validated Parquet file; returns the file's path."""
    root = Path(platform.tables.validated.uri) / f"event_date={day.isoformat()}"
    (path,) = sorted(root.glob("*.parquet"))
    data = bytearray(path.read_bytes())
    data[len(data) // 3 :] = b"\0" * (len(data) - len(data) // 3)
    path.write_bytes(bytes(data))
    return str(path)


@pytest.fixture(scope="module", params=["local", "spark"])
def partial(
    request: pytest.FixtureRequest,
    make_platform: PlatformFactory,
) -> Partial:
    name = f"partial_{request.param}"
    platform = make_platform(name, ENGINE=request.param)
    for day in DAYS:
        assert platform.generate(day).success
    assert platform.train().success
    assert platform.score_range(DAYS[0], DAYS[-1]).success
    corrupted = _corrupt(platform, BAD_DAY)
    # Re-score (as after a promotion): validation is not re-run, so the bad file is read.
    return Partial(platform, corrupted, platform.score_range(DAYS[0], DAYS[-1], "rescore_job"))


def test_the_other_partitions_are_scored_and_committed(partial: Partial) -> None:
    assert not partial.result.success
    assert partial.result.get_failed_step_keys() == {partial.platform.op("predictions")}
    for day in (DAYS[0], DAYS[2]):
        rescored = read_day(partial.platform.predictions, day)
        assert set(rescored.column("run_id").to_pylist()) == {partial.result.run_id}


def test_the_bad_partition_keeps_its_previous_predictions(partial: Partial) -> None:
    previous = read_day(partial.platform.predictions, BAD_DAY)
    assert previous.num_rows > 0
    assert partial.result.run_id not in set(previous.column("run_id").to_pylist())


def test_the_error_report_names_partition_file_and_error(partial: Partial) -> None:
    message = failure_messages(partial.result)
    assert f"1 of 3 partitions failed ({BAD_DAY})" in message
    assert f"{BAD_DAY}: {partial.corrupted}" in message
    (failure,) = partial.result.get_step_failure_events()
    data = failure.step_failure_data.user_failure_data
    assert data is not None
    metadata = data.metadata
    assert metadata["failed_partitions"].value == [BAD_DAY.isoformat()]
    report = str(metadata["error_report"].value)
    assert partial.corrupted in report and "| partition | file | error |" in report


def test_committed_days_are_recorded_as_materialized(partial: Partial) -> None:
    events = partial.platform.instance.fetch_materializations(
        partial.platform.scope.predictions, limit=100
    ).records
    recorded = {
        e.event_log_entry.dagster_event.partition
        for e in events
        if e.run_id == partial.result.run_id and e.event_log_entry.dagster_event
    }
    assert recorded == {DAYS[0].isoformat(), DAYS[2].isoformat()}
