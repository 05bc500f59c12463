"""Lake integrity: what the platform writes can be verified, and what cannot be read fails
only its own day, saying which day, which file and why.

- Every table is written as ZSTD Parquet with a checksum on every page, verified on read:
  bytes overwritten inside a file (footer intact) fail that day naming the file; the other
  days still commit.
- Validation isolates failures per day like scoring: a truncated or overwritten features file,
  or a features file holding strings in a numeric column, fails that day (day, file and why
  named, no traceback, no colour codes) while the other days are validated, scored and
  recorded.
- A day's validation commits its quarantine (the write-ahead record, with the verdict) before
  its validated rows: a kill between them is detected - the day is not scored - and a rerun
  recovers it.
- A day whose latest validation failed is not re-scored by ``rescore_job``.
- The Delta version recorded for a write is that write's own commit, whatever other writers
  commit meanwhile; two writers of the same day end with a clear "rerun".
"""

from __future__ import annotations

import datetime as dt
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from deltalake import CommitProperties, DeltaTable
from deltalake.transaction import AddAction

import batch_inference_platform.defs.validation.assets as validation_assets
from batch_inference_platform.lib.features.synthetic import generate_partition, raw_schema
from batch_inference_platform.lib.lake.catalog import CatalogEntry, record
from batch_inference_platform.lib.lake.errors import (
    ConcurrentWriteError,
    UnreadableDataError,
    error_summary,
)
from batch_inference_platform.lib.lake.lineage import latest_commit
from batch_inference_platform.lib.lake.log import read_commit
from batch_inference_platform.lib.lake.tables import (
    WRITE_ID_KEY,
    DeltaLocation,
    count_partition,
    read_partition,
    replace_partition,
    snapshot,
)
from batch_inference_platform.lib.quality.verdicts import VALIDATION_ID, validation_states

from .conftest import Platform, PlatformFactory, failure_messages, materializations, read_day

DAYS = [dt.date(2026, 11, d) for d in (2, 3, 4)]
BAD_DAY = DAYS[1]
GOOD_DAYS = [DAYS[0], DAYS[2]]
COLUMN = "annual_income"
ANSI = "\x1b["


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


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _recorded(platform: Platform, asset: str, run_id: str) -> set[str]:
    """Partitions of ``asset`` recorded as materialized by run ``run_id``."""
    events = platform.instance.fetch_materializations(dg.AssetKey(asset), limit=1000).records
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


# --------------------------------------------------------------------------- the files


def test_every_table_is_zstd_parquet_with_page_checksums(tmp_path: Path) -> None:
    location = DeltaLocation(str(tmp_path / "t"))
    day = DAYS[0]
    replace_partition(location, day, generate_partition(day, 5000), raw_schema())
    path = _data_file(location, day)
    metadata = pq.ParquetFile(path).metadata
    codecs = {
        metadata.row_group(g).column(c).compression
        for g in range(metadata.num_row_groups)
        for c in range(metadata.num_columns)
    }
    assert codecs == {"ZSTD"}
    # The catalog too (rewritten through the same writer).
    catalog = DeltaLocation(str(tmp_path / "catalog"))
    entry = CatalogEntry(
        "features", location.uri, day, 0, "h", 1, None, None, None, None, None, "r",
        dt.datetime.now(dt.UTC),
    )  # fmt: skip
    record(catalog, [entry])
    (catalog_file,) = catalog.open().file_uris()
    catalog_meta = pq.ParquetFile(catalog_file).metadata
    assert catalog_meta.row_group(0).column(0).compression == "ZSTD"
    # Page checksums: one changed byte in a data page fails the read, naming the file.
    _overwrite_inside(path, length=1)
    with pytest.raises(UnreadableDataError, match="page checksum mismatch") as info:
        sum(b.num_rows for b in read_partition(location, day))
    assert info.value.file == str(path) and info.value.day == day
    assert str(info.value).startswith(f"{day}: {path}: ")


CORRUPTIONS = 48


def test_overwritten_bytes_are_always_detected(tmp_path: Path) -> None:
    """A sweep: random overwrites of 1 B to 64 KiB at random places in the data pages of a
    300,000-row feature file, footer intact; every one fails the read, naming the file.

    Run with ``-s`` for the figure (docs/reliability.md)."""
    location = DeltaLocation(str(tmp_path / "features"))
    day = DAYS[0]
    replace_partition(location, day, generate_partition(day, 300_000), raw_schema())
    path = _data_file(location, day)
    original = path.read_bytes()
    footer = pq.ParquetFile(path).metadata.serialized_size + 8
    rng = random.Random(15)
    detected = 0
    for _ in range(CORRUPTIONS):
        length = rng.choice([1, 16, 4096, 65536])
        offset = rng.randrange(4, len(original) - footer - length)
        data = bytearray(original)
        data[offset : offset + length] = rng.randbytes(length)
        path.write_bytes(bytes(data))
        try:
            for _batch in snapshot(location).batches(day):
                pass
        except UnreadableDataError as error:
            assert error.file == str(path)
            detected += 1
    print(f"\n{detected} of {CORRUPTIONS} corruptions detected ({len(original):,}-byte file)")
    assert detected == CORRUPTIONS


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
    before = {day: read_day(platform.predictions, day) for day in DAYS}
    path = _data_file(platform.layout.validated, BAD_DAY)
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
    assert read_day(platform.predictions, BAD_DAY).equals(corrupted_validated.before[BAD_DAY])
    for day in GOOD_DAYS:
        assert _run_ids(read_day(platform.predictions, day)) == {result.run_id}
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
    features = platform.layout.features
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

    truncated = _data_file(platform.layout.features, BAD_DAY)
    _truncate(truncated)
    truncated_run = platform.score_range(DAYS[0], DAYS[-1])
    after_truncated = {}
    for day in GOOD_DAYS:
        commit = latest_commit(platform.layout.validated, day)
        assert commit is not None
        after_truncated[day] = (commit.run_id, _run_ids(read_day(platform.predictions, day)))

    assert platform.generate(BAD_DAY).success
    overwritten = _data_file(platform.layout.features, BAD_DAY)
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
    assert result.get_failed_step_keys() == {"predictions"}
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
    assert count_partition(platform.predictions, BAD_DAY) == 0  # never scored
    # validated_features says which day it could not read, and why.
    day = materializations(result)["validated_features"]["partitions"][str(BAD_DAY)]
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
        assert _run_ids(read_day(platform.predictions, day)) == {result.run_id}
    assert _recorded(platform, "predictions", result.run_id) == {str(d) for d in GOOD_DAYS}


def test_strings_in_a_numeric_column_name_the_column_and_file(feature_runs: FeatureRuns) -> None:
    result = feature_runs.strings_run
    assert not result.success
    assert result.get_failed_step_keys() == {"validated_features"}  # one day: nothing to score
    message = failure_messages(result)
    assert f"{BAD_DAY}: {feature_runs.strings}: " in message
    assert f"column '{COLUMN}' is stored as string, the table declares double" in message
    _clean(message)


def test_error_summary_drops_tracebacks_and_colour_codes() -> None:
    spark_style = (
        "\x1b[0;31mPythonException\x1b[0m: \n  An exception was thrown from the Python worker. "
        "Please see the stack trace below.\nTraceback (most recent call last):\n"
        '  File "/x/worker.py", line 1, in main\n    process()\n'
        '  File "/x/scan.py", line 9, in scan\n    ^^^^^^\n'
        "pyarrow.lib.ArrowInvalid: \x1b[1mCould not open Parquet input source\x1b[0m 'f.parquet'\n"
    )
    summary = error_summary(RuntimeError(spark_style))
    assert summary == (
        "RuntimeError: PythonException: pyarrow.lib.ArrowInvalid: Could not open Parquet "
        "input source 'f.parquet'"
    )
    _clean(summary)


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
    features = platform.layout.features
    schema = raw_schema()
    index = schema.get_field_index(COLUMN)
    nulled = [
        b.set_column(index, COLUMN, pa.nulls(b.num_rows, schema.field(COLUMN).type))
        for b in read_partition(features, BAD_DAY)
    ]
    replace_partition(features, BAD_DAY, nulled, schema)
    assert not platform.score(BAD_DAY).success
    predictions_before = read_day(platform.predictions, BAD_DAY)
    failed_day_rescore = platform.score_range(BAD_DAY, BAD_DAY, "rescore_job")

    # DAYS[2] is re-validated, and the process dies between its quarantine and validated commits.
    killed = DAYS[2]
    real = validation_assets.replace_partition

    def dies_before_validated(location: DeltaLocation, *args, **kwargs):
        if location == platform.layout.validated:
            raise SimulatedKill
        return real(location, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(validation_assets, "replace_partition", dies_before_validated)
        assert not platform.score(killed).success
    killed_state = validation_states(platform.layout, [killed])[killed].refusal
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
    assert count_partition(platform.layout.validated, BAD_DAY) > 0
    assert read_day(platform.predictions, BAD_DAY).equals(verdicts.predictions_before)
    writers = {c.get("dagster_run_id") for c in platform.predictions.open().history()}
    assert result.run_id not in writers


def test_a_kill_between_quarantine_and_validated_is_detected_and_recovered(
    verdicts: Verdicts,
) -> None:
    platform, killed = verdicts.platform, DAYS[2]
    assert verdicts.killed_state is not None and "did not finish" in verdicts.killed_state
    rescore = verdicts.killed_rescore
    assert not rescore.success
    assert f"{killed}: its validation by run " in failure_messages(rescore)
    assert _run_ids(read_day(platform.predictions, killed)) != {rescore.run_id}
    # The rerun redoes both commits: one validation id, one copy of each row set, scored.
    recovered = verdicts.recovered
    assert recovered.success
    quarantine = latest_commit(platform.layout.quarantine, killed)
    validated = latest_commit(platform.layout.validated, killed)
    assert quarantine is not None and validated is not None
    assert quarantine.info[VALIDATION_ID] == validated.info[VALIDATION_ID]
    assert quarantine.run_id == validated.run_id == recovered.run_id
    assert validation_states(platform.layout, [killed])[killed].refusal is None
    rows = read_day(platform.layout.validated, killed)
    assert rows.num_rows == len(set(rows.column("customer_id").to_pylist()))
    assert count_partition(platform.layout.quarantine, killed) == quarantine.rows
    assert _run_ids(read_day(platform.predictions, killed)) == {recovered.run_id}


# --------------------------------------------------------------------------- concurrent writers

SCHEMA = pa.schema(
    [
        pa.field("customer_id", pa.int64(), nullable=False),
        pa.field("event_date", pa.date32(), nullable=False),
        pa.field("value", pa.float64()),
    ]
)


def _batch(day: dt.date, ids: list[int], value: float) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(
        {"customer_id": ids, "event_date": [day] * len(ids), "value": [value] * len(ids)},
        schema=SCHEMA,
    )


def _meanwhile(
    location: DeltaLocation, day: dt.date, value: float, other_day: dt.date
) -> Iterator[pa.RecordBatch]:
    """A producer that, after its rows are written, lets another writer commit ``other_day``
    (before this write commits)."""
    yield _batch(day, [1, 2, 3], value)
    replace_partition(location, other_day, [_batch(other_day, [7], -value)], SCHEMA)


def test_the_recorded_version_is_our_own_commit(tmp_path: Path) -> None:
    """Another writer replaces a different day while ours is in flight: Delta reports a
    conflict (that commit removed files ours could have read), the write is retried, and the
    version recorded is ours - in the write's result and in the lineage."""
    location = DeltaLocation(str(tmp_path / "t"))
    for day in DAYS:
        replace_partition(location, day, [_batch(day, [0], 0.0)], SCHEMA)
    stale = location.open()
    result = replace_partition(
        location,
        DAYS[0],
        _meanwhile(location, DAYS[0], 1.0, DAYS[1]),
        SCHEMA,
        commit_metadata={"partition": str(DAYS[0])},
    )
    assert result.version == 4  # 3: the other writer's commit of DAYS[1]
    mine = read_commit(location.files(), result.version)
    assert mine is not None and mine["operationParameters"]["predicate"].endswith("2026-11-02'")
    other = read_commit(location.files(), 3)
    assert other is not None and other["operationParameters"]["predicate"].endswith("2026-11-03'")
    assert sorted(r["value"] for b in read_partition(location, DAYS[1]) for r in b.to_pylist()) == [
        -1.0
    ]
    # A later writer, and a stale table object, do not change what lineage says.
    replace_partition(location, DAYS[2], [_batch(DAYS[2], [5], 5.0)], SCHEMA)
    assert stale.version() == 2
    commit = latest_commit(location, DAYS[0])
    assert commit is not None and commit.version == result.version
    assert commit.info[WRITE_ID_KEY] == mine[WRITE_ID_KEY]


def test_concurrent_writers_of_different_days_each_record_their_own_commit(
    tmp_path: Path,
) -> None:
    location = DeltaLocation(str(tmp_path / "t"))
    for day in DAYS:
        replace_partition(location, day, [_batch(day, [0], 0.0)], SCHEMA)
    results: dict[dt.date, list[int]] = {day: [] for day in DAYS}
    errors: list[BaseException] = []

    def writer(day: dt.date) -> None:
        try:
            for round_ in range(6):
                batch = _batch(day, [round_], float(round_))
                results[day].append(replace_partition(location, day, [batch], SCHEMA).version)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(day,)) for day in DAYS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    files = location.files()
    for day, versions in results.items():
        for version in versions:
            commit = read_commit(files, version)
            assert commit is not None and commit["operationParameters"]["predicate"].endswith(
                f"{day}'"
            ), (day, version)
    assert sorted(v for vs in results.values() for v in vs) == list(range(3, 3 + 18))


def test_two_writers_of_the_same_day_end_with_rerun(tmp_path: Path) -> None:
    location = DeltaLocation(str(tmp_path / "t"))
    replace_partition(location, DAYS[0], [_batch(DAYS[0], [0], 0.0)], SCHEMA)
    with pytest.raises(ConcurrentWriteError) as info:
        replace_partition(location, DAYS[0], _meanwhile(location, DAYS[0], 1.0, DAYS[0]), SCHEMA)
    message = str(info.value)
    assert f"another writer committed partition {DAYS[0]}" in message
    assert f"rerun to write {DAYS[0]} again" in message
    assert "isolation" not in message.lower()
    # The other writer's rows, once; nothing of ours, and no orphan file of ours left.
    rows = [r for b in read_partition(location, DAYS[0]) for r in b.to_pylist()]
    assert [(r["customer_id"], r["value"]) for r in rows] == [(7, -1.0)]
    on_disk = {p.name for p in Path(location.uri).rglob("*.parquet")}
    active = {Path(u).name for u in location.open().file_uris()}
    assert on_disk - active == {Path(u).name for u in _replaced(location)}


def _replaced(location: DeltaLocation) -> list[str]:
    """Files of earlier versions (removed by later commits, still on disk until vacuum)."""
    table = DeltaTable(location.uri, version=0)
    return table.file_uris()


def test_a_first_write_racing_another_first_write_of_the_same_day_does_not_duplicate(
    tmp_path: Path,
) -> None:
    """Both writers only add files (the day was empty): Delta would commit both; the
    partition's app transaction makes the second conflict instead."""
    location = DeltaLocation(str(tmp_path / "t"))
    replace_partition(location, DAYS[1], [_batch(DAYS[1], [0], 0.0)], SCHEMA)
    with pytest.raises(ConcurrentWriteError, match="rerun"):
        replace_partition(location, DAYS[0], _meanwhile(location, DAYS[0], 1.0, DAYS[0]), SCHEMA)
    assert count_partition(location, DAYS[0]) == 1


def test_commits_carry_rows_and_file_statistics(tmp_path: Path) -> None:
    location = DeltaLocation(str(tmp_path / "t"))
    result = replace_partition(location, DAYS[0], [_batch(DAYS[0], [1, 2, 5], 1.0)], SCHEMA)
    commit = read_commit(location.files(), result.version)
    assert commit is not None and commit["operationMetrics"]["num_added_rows"] == 3
    actions = pa.table(location.open().get_add_actions(flatten=True)).to_pylist()
    assert [(a["num_records"], a["min.customer_id"], a["max.customer_id"]) for a in actions] == [
        (3, 1, 5)
    ]
    assert location.open().count() == 3


def test_our_version_even_when_another_commit_lands_right_after_ours(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another writer commits between our commit and the moment we look for its version: the
    recorded version is still ours (not the newest), in the result and in the lineage."""
    location = DeltaLocation(str(tmp_path / "t"))
    for day in DAYS:
        replace_partition(location, day, [_batch(day, [0], 0.0)], SCHEMA)
    real = DeltaTable.create_write_transaction
    others: list[int] = []

    def then_another_writer(self: DeltaTable, *args, **kwargs) -> None:
        real(self, *args, **kwargs)
        if not others:  # once: the other writer's own commit goes through unpatched
            others.append(0)
            other = replace_partition(location, DAYS[1], [_batch(DAYS[1], [9], 9.0)], SCHEMA)
            others[0] = other.version

    monkeypatch.setattr(DeltaTable, "create_write_transaction", then_another_writer)
    monkeypatch.setattr(DeltaTable, "history", _history_after_another_commit(location))
    result = replace_partition(
        location,
        DAYS[0],
        [_batch(DAYS[0], [1], 1.0)],
        SCHEMA,
        commit_metadata={"partition": str(DAYS[0])},
    )
    assert (result.version, others[0]) == (3, 4)
    commit = latest_commit(location, DAYS[0])
    assert commit is not None and commit.version == 3


def _history_after_another_commit(location: DeltaLocation):
    """``DeltaTable.history`` as it behaves when another writer commits just before it lists
    the log (once): the listing then has one more commit than the table's version says."""
    real = DeltaTable.history
    done: list[bool] = []

    def history(self: DeltaTable, limit: int | None = None) -> list[dict]:
        if not done:
            done.append(True)
            replace_partition(location, DAYS[2], [_batch(DAYS[2], [8], 8.0)], SCHEMA)
        return real(self, limit)

    return history


def test_lineage_versions_are_right_while_another_writer_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit landing after the table was opened does not shift the versions lineage reads
    (``DeltaTable.history()`` numbers them from the opened version: off by one here)."""
    location = DeltaLocation(str(tmp_path / "t"))
    for day in DAYS:
        stamp = {"partition": str(day)}
        replace_partition(location, day, [_batch(day, [0], 0.0)], SCHEMA, commit_metadata=stamp)
    real_open = DeltaLocation.open

    def open_then_another_commit(self: DeltaLocation) -> DeltaTable:
        table = real_open(self)
        monkeypatch.setattr(DeltaLocation, "open", real_open)
        replace_partition(location, DAYS[2], [_batch(DAYS[2], [1], 1.0)], SCHEMA)
        return table

    monkeypatch.setattr(DeltaLocation, "open", open_then_another_commit)
    monkeypatch.setattr(DeltaTable, "history", _history_after_another_commit(location))
    commit = latest_commit(location, DAYS[1])
    assert commit is not None and commit.version == 1


def test_numbers_stored_as_text_are_refused_even_when_they_parse(tmp_path: Path) -> None:
    """A file whose float column holds text that happens to parse is still not the table's
    type: refused, naming the column and file, not silently parsed."""
    location = DeltaLocation(str(tmp_path / "t"))
    day = DAYS[0]
    replace_partition(location, day, [_batch(day, [1, 2], 1.5)], SCHEMA)
    relative = f"event_date={day}/part-00000-text-c000.zstd.parquet"
    path = Path(location.uri) / relative
    pq.write_table(pa.table({"customer_id": [3], "value": ["2.5"]}), path)
    table = location.open()
    table.create_write_transaction(
        [AddAction(relative, path.stat().st_size, {"event_date": str(day)}, 0, True, "{}")],
        mode="append",
        schema=table.schema(),
        partition_by=["event_date"],
    )
    with pytest.raises(UnreadableDataError) as info:
        list(read_partition(location, day))
    assert str(info.value) == (
        f"{day}: {path}: column 'value' is stored as string, the table declares double"
    )
