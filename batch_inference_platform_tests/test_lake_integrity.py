"""Lake integrity through Dagster: what cannot be read fails only its own day, saying which
day, which file and why (the table-level guarantees are in ``test_lake_writes.py``).

- Bytes overwritten inside a validated file (footer intact) fail that day naming the file;
  the other days still commit.
- Validation isolates failures per day like scoring: a truncated or overwritten features file,
  or a features file holding strings in a numeric column, fails that day (day, file and why
  named, no traceback, no colour codes) while the other days are validated, scored and
  recorded.
- A day's validation commits its quarantine (the write-ahead record, with the verdict) before
  its validated rows: a kill between them is detected - the day is not scored - and a rerun
  recovers it.
- A day whose latest validation failed is not re-scored by ``rescore_job``.

The platform's deployment (``Platform.tables``) is the daily credit-risk one.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from deltalake import CommitProperties
from deltalake.transaction import AddAction

import batch_inference_platform.defs.validation.assets as validation_assets
from batch_inference_platform.lib.deployments.partitioning import Partitioning, PartitionKind
from batch_inference_platform.lib.features.synthetic import generate_partition, raw_schema
from batch_inference_platform.lib.lake.lineage import latest_commit
from batch_inference_platform.lib.lake.tables import (
    DeltaLocation,
    count_partition,
    read_partition,
    replace_partition,
    table_schema,
)
from batch_inference_platform.lib.quality.verdicts import VALIDATION_ID, validation_states

from .conftest import (
    Platform,
    PlatformFactory,
    failure_messages,
    partition_materializations,
)

DAYS = [dt.date(2026, 11, d) for d in (2, 3, 4)]
BAD_DAY = DAYS[1]
GOOD_DAYS = [DAYS[0], DAYS[2]]
COLUMN = "annual_income"
ANSI = "\x1b["
DAILY = Partitioning(PartitionKind.DAILY, "event_date")


# --------------------------------------------------------------------------- helpers


def _data_file(location: DeltaLocation, day: dt.date) -> Path:
    """The (single) data file holding ``day`` in the table's current version."""
    (uri,) = location.open().file_uris(file_pruning_predicate=[("event_date", "=", str(day))])
    return Path(uri)


def _overwrite_inside(path: Path, length: int = 64 * 1024, seed: int = 0) -> None:
    """Overwrite ``length`` bytes with random ones inside the data pages, footer intact."""
    data = bytearray(path.read_bytes())
    footer = pq.ParquetFile(path).metadata.serialized_size + 8
    length = min(length, (len(data) - footer) // 2)
    offset = (len(data) - footer - length) // 2
    data[offset : offset + length] = random.Random(seed).randbytes(length)
    path.write_bytes(bytes(data))
    pq.ParquetFile(path)  # the footer still parses: only checksums can tell


def read_day(location: DeltaLocation, day: dt.date) -> pa.Table:
    """The rows of one day (an empty table when the table does not exist)."""
    if not location.exists():
        return pa.table({})
    batches = list(read_partition(location, DAILY, str(day)))
    return pa.Table.from_batches(batches, table_schema(location))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _recorded(platform: Platform, asset: str, run_id: str) -> set[str]:
    """Partitions of ``asset`` recorded as materialized by run ``run_id``."""
    events = platform.instance.fetch_materializations(platform.scope.key(asset), limit=1000).records
    return {
        str(e.event_log_entry.dagster_event.partition)
        for e in events
        if e.run_id == run_id and e.event_log_entry.dagster_event
    }


def _run_ids(table: pa.Table) -> set[str]:
    return {str(run) for run in table.column("run_id").to_pylist()} if table.num_rows else set()


def _clean(message: str) -> None:
    assert ANSI not in message
    assert "Traceback" not in message
    assert 'File "' not in message


def _scored_platform(make_platform: PlatformFactory, name: str) -> tuple[Platform, str]:
    platform = make_platform(name)
    for day in DAYS:
        assert platform.generate(day).success
    assert platform.train().success
    result = platform.score_range(DAYS[0], DAYS[-1])
    assert result.success
    return platform, result.run_id


# --------------------------------------------------------------------------- validated file


@dataclass
class Rescored:
    platform: Platform
    corrupted: Path
    before: dict[dt.date, pa.Table]
    result: dg.ExecuteInProcessResult


@pytest.fixture(scope="module")
def corrupted_validated(make_platform: PlatformFactory) -> Rescored:
    platform, _ = _scored_platform(make_platform, "integrity_validated")
    before = {day: read_day(platform.tables.predictions, day) for day in DAYS}
    path = _data_file(platform.tables.validated, BAD_DAY)
    _overwrite_inside(path)
    result = platform.score_range(DAYS[0], DAYS[-1], "rescore_job")
    return Rescored(platform, path, before, result)


def test_overwritten_validated_file_fails_its_day_naming_the_file(
    corrupted_validated: Rescored,
) -> None:
    result = corrupted_validated.result
    assert not result.success
    message = failure_messages(result)
    assert f"1 of 3 partitions failed ({BAD_DAY})" in message
    assert f"{BAD_DAY}: {corrupted_validated.corrupted}: page checksum mismatch" in message
    _clean(message)
    platform = corrupted_validated.platform
    # The bad day keeps its previous scores; the others were re-scored and recorded.
    assert read_day(platform.tables.predictions, BAD_DAY).equals(
        corrupted_validated.before[BAD_DAY]
    )
    for day in GOOD_DAYS:
        assert _run_ids(read_day(platform.tables.predictions, day)) == {result.run_id}
    assert _recorded(platform, "predictions", result.run_id) == {str(d) for d in GOOD_DAYS}


# --------------------------------------------------------------------------- features files


@dataclass
class FeatureRuns:
    platform: Platform
    truncated: Path
    truncated_run: dg.ExecuteInProcessResult
    after_truncated: dict[dt.date, tuple[str, set[str]]]
    """Per good day, right after that run: the run of its latest validated commit, and the
    runs its predictions come from."""
    overwritten: Path
    overwritten_run: dg.ExecuteInProcessResult
    strings: Path
    strings_run: dg.ExecuteInProcessResult


def _commit_strings_file(platform: Platform, day: dt.date) -> Path:
    """Replace ``day``'s features with a committed file storing ``COLUMN`` as strings (the
    table still declares it a float): the schema check passes, reading it cannot."""
    features = platform.tables.features
    schema = raw_schema()
    index = schema.get_field_index(COLUMN)
    file_schema = schema.set(index, pa.field(COLUMN, pa.string())).remove(
        schema.get_field_index("event_date")
    )
    batches = [
        pa.RecordBatch.from_arrays(
            [_as_text(b.column(i)) if i == index else b.column(i) for i in range(b.num_columns)],
            schema=schema.set(index, pa.field(COLUMN, pa.string())),
        ).drop_columns(["event_date"])
        for b in generate_partition(day, 3000)
    ]
    relative = f"event_date={day}/part-00000-strings-c000.zstd.parquet"
    path = Path(features.uri) / relative
    pq.write_table(pa.Table.from_batches(batches, file_schema), path, compression="zstd")
    table = features.open()
    table.create_write_transaction(
        [AddAction(relative, path.stat().st_size, {"event_date": str(day)}, 0, True, "{}")],
        mode="overwrite",
        schema=table.schema(),
        partition_by=["event_date"],
        partition_filters=[("event_date", "=", str(day))],
        commit_properties=CommitProperties(custom_metadata={"partition": str(day)}),
    )
    return path


def _as_text(values: pa.Array) -> pa.Array:
    """Numbers as text, every tenth one "n/a" (what a careless upstream export writes)."""
    text = pc.cast(values, pa.string()).to_pylist()
    return pa.array([v if i % 10 else "n/a" for i, v in enumerate(text)], pa.string())


@pytest.fixture(scope="module")
def feature_runs(make_platform: PlatformFactory) -> FeatureRuns:
    platform = make_platform("integrity_features")
    for day in DAYS:
        assert platform.generate(day).success
    assert platform.train().success

    truncated = _data_file(platform.tables.features, BAD_DAY)
    _truncate(truncated)
    truncated_run = platform.score_range(DAYS[0], DAYS[-1])
    after_truncated = {}
    for day in GOOD_DAYS:
        commit = latest_commit(platform.tables.validated, str(day))
        assert commit is not None
        after_truncated[day] = (commit.run_id, _run_ids(read_day(platform.tables.predictions, day)))

    assert platform.generate(BAD_DAY).success
    overwritten = _data_file(platform.tables.features, BAD_DAY)
    _overwrite_inside(overwritten)
    overwritten_run = platform.score_range(DAYS[0], DAYS[-1])

    strings = _commit_strings_file(platform, BAD_DAY)
    strings_run = platform.score(BAD_DAY)
    return FeatureRuns(
        platform,
        truncated,
        truncated_run,
        after_truncated,
        overwritten,
        overwritten_run,
        strings,
        strings_run,
    )


def test_truncated_features_file_fails_only_its_day(feature_runs: FeatureRuns) -> None:
    platform, result = feature_runs.platform, feature_runs.truncated_run
    assert not result.success
    assert result.get_failed_step_keys() == {platform.op("predictions")}
    message = failure_messages(result)
    assert f"1 of 3 partitions failed ({BAD_DAY})" in message
    assert f"{BAD_DAY}: {feature_runs.truncated}: " in message
    assert "could not read the features" in message and "truncated" in message
    _clean(message)
    # The other two days: validated, scored and recorded as materialized by this run.
    for day in GOOD_DAYS:
        assert feature_runs.after_truncated[day] == (result.run_id, {result.run_id})
    assert _recorded(platform, "predictions", result.run_id) == {str(d) for d in GOOD_DAYS}
    assert {str(d) for d in GOOD_DAYS} <= _recorded(platform, "validated_features", result.run_id)
    assert count_partition(platform.tables.predictions, DAILY, str(BAD_DAY)) == 0  # never scored
    # validated_features says which day it could not read, and why.
    day = partition_materializations(result, platform.scope.validated)[str(BAD_DAY)]
    assert day["passed"] is False and "truncated" in day["error"]


def test_overwritten_features_file_fails_its_day_naming_the_file(
    feature_runs: FeatureRuns,
) -> None:
    platform, result = feature_runs.platform, feature_runs.overwritten_run
    assert not result.success
    message = failure_messages(result)
    assert f"{BAD_DAY}: {feature_runs.overwritten}: " in message
    assert "page checksum mismatch" in message
    _clean(message)
    for day in GOOD_DAYS:
        assert _run_ids(read_day(platform.tables.predictions, day)) == {result.run_id}
    assert _recorded(platform, "predictions", result.run_id) == {str(d) for d in GOOD_DAYS}


def test_strings_in_a_numeric_column_name_the_column_and_file(feature_runs: FeatureRuns) -> None:
    result = feature_runs.strings_run
    assert not result.success
    # One day: nothing to score.
    assert result.get_failed_step_keys() == {feature_runs.platform.op("validated_features")}
    message = failure_messages(result)
    assert f"{BAD_DAY}: {feature_runs.strings}: " in message
    assert f"column '{COLUMN}' is stored as string, the table declares double" in message
    _clean(message)


# --------------------------------------------------------------------------- verdicts


class SimulatedKill(BaseException):
    """The process dies: nothing after this point runs (not even error handling)."""


@dataclass
class Verdicts:
    platform: Platform
    failed_day_rescore: dg.ExecuteInProcessResult
    predictions_before: pa.Table
    killed_state: str | None
    killed_rescore: dg.ExecuteInProcessResult
    recovered: dg.ExecuteInProcessResult


@pytest.fixture(scope="module")
def verdicts(make_platform: PlatformFactory) -> Verdicts:
    platform, _ = _scored_platform(make_platform, "integrity_verdicts")

    # BAD_DAY's features become all-null in a required column: its validation fails.
    features = platform.tables.features
    schema = raw_schema()
    index = schema.get_field_index(COLUMN)
    nulled = [
        b.set_column(index, COLUMN, pa.nulls(b.num_rows, schema.field(COLUMN).type))
        for b in read_partition(features, DAILY, str(BAD_DAY))
    ]
    replace_partition(features, DAILY, str(BAD_DAY), nulled, schema)
    assert not platform.score(BAD_DAY).success
    predictions_before = read_day(platform.tables.predictions, BAD_DAY)
    failed_day_rescore = platform.score_range(BAD_DAY, BAD_DAY, "rescore_job")

    # DAYS[2] is re-validated, and the process dies between its quarantine and validated commits.
    killed = DAYS[2]
    real = validation_assets.replace_partition

    def dies_before_validated(location: DeltaLocation, *args, **kwargs):
        if location == platform.tables.validated:
            raise SimulatedKill
        return real(location, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(validation_assets, "replace_partition", dies_before_validated)
        assert not platform.score(killed).success
    killed_state = validation_states(platform.tables, [str(killed)])[str(killed)].refusal
    killed_rescore = platform.score_range(killed, killed, "rescore_job")
    recovered = platform.score(killed)
    return Verdicts(
        platform, failed_day_rescore, predictions_before, killed_state, killed_rescore, recovered
    )


def test_a_day_whose_latest_validation_failed_is_not_rescored(verdicts: Verdicts) -> None:
    platform, result = verdicts.platform, verdicts.failed_day_rescore
    assert not result.success
    message = failure_messages(result)
    assert f"{BAD_DAY}: its latest validation (run " in message
    assert "failed a blocking check, so its older validated rows are not scored" in message
    assert "null_rates_within_limits" in message
    _clean(message)
    # Its last good validated rows are kept, but nothing was scored from them.
    assert count_partition(platform.tables.validated, DAILY, str(BAD_DAY)) > 0
    assert read_day(platform.tables.predictions, BAD_DAY).equals(verdicts.predictions_before)
    writers = {c.get("dagster_run_id") for c in platform.tables.predictions.open().history()}
    assert result.run_id not in writers


def test_a_kill_between_quarantine_and_validated_is_detected_and_recovered(
    verdicts: Verdicts,
) -> None:
    platform, killed = verdicts.platform, DAYS[2]
    assert verdicts.killed_state is not None and "did not finish" in verdicts.killed_state
    rescore = verdicts.killed_rescore
    assert not rescore.success
    assert f"{killed}: its validation by run " in failure_messages(rescore)
    assert _run_ids(read_day(platform.tables.predictions, killed)) != {rescore.run_id}
    # The rerun redoes both commits: one validation id, one copy of each row set, scored.
    recovered = verdicts.recovered
    assert recovered.success
    quarantine = latest_commit(platform.tables.quarantine, str(killed))
    validated = latest_commit(platform.tables.validated, str(killed))
    assert quarantine is not None and validated is not None
    assert quarantine.info[VALIDATION_ID] == validated.info[VALIDATION_ID]
    assert quarantine.run_id == validated.run_id == recovered.run_id
    assert validation_states(platform.tables, [str(killed)])[str(killed)].refusal is None
    rows = read_day(platform.tables.validated, killed)
    assert rows.num_rows == len(set(rows.column("customer_id").to_pylist()))
    assert count_partition(platform.tables.quarantine, DAILY, str(killed)) == quarantine.rows
    assert _run_ids(read_day(platform.tables.predictions, killed)) == {recovered.run_id}
