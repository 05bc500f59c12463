"""Lake integrity at the table level: what the lake writes can be verified, and what cannot
be read fails naming the partition, the file and why.

- Every table is written as ZSTD Parquet with a checksum on every page, verified on read:
  bytes overwritten inside a file (footer intact) fail the read naming the file.
- The Delta version recorded for a write is that write's own commit, whatever other writers
  commit meanwhile; two writers of the same partition end with a clear "rerun".

(The same failures through Dagster - one partition failing while the others are validated,
scored and recorded - are in ``test_lake_integrity.py``.)
"""

from __future__ import annotations

import datetime as dt
import random
import threading
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable
from deltalake.transaction import AddAction

from batch_inference_platform.lib.deployments.partitioning import Partitioning, PartitionKind
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

DAILY = Partitioning(PartitionKind.DAILY, "event_date")
DAYS = ["2026-11-02", "2026-11-03", "2026-11-04"]
ANSI = "\x1b["


def _date(key: str) -> dt.date:
    return dt.date.fromisoformat(key)


def _data_file(location: DeltaLocation, day: str) -> Path:
    """The (single) data file holding ``day`` in the table's current version."""
    (uri,) = location.open().file_uris(file_pruning_predicate=[("event_date", "=", day)])
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


def _clean(message: str) -> None:
    assert ANSI not in message
    assert "Traceback" not in message
    assert 'File "' not in message


# --------------------------------------------------------------------------- the files


def test_every_table_is_zstd_parquet_with_page_checksums(tmp_path: Path) -> None:
    location = DeltaLocation(str(tmp_path / "t"))
    day = DAYS[0]
    replace_partition(location, DAILY, day, generate_partition(_date(day), 5000), raw_schema())
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
        "credit_risk", "features", location.uri, day, 0, "h", 1, None, None, None, None, None,
        "r", dt.datetime.now(dt.UTC),
    )  # fmt: skip
    record(catalog, [entry])
    (catalog_file,) = catalog.open().file_uris()
    catalog_meta = pq.ParquetFile(catalog_file).metadata
    assert catalog_meta.row_group(0).column(0).compression == "ZSTD"
    # Page checksums: one changed byte in a data page fails the read, naming the file.
    _overwrite_inside(path, length=1)
    with pytest.raises(UnreadableDataError, match="page checksum mismatch") as info:
        sum(b.num_rows for b in read_partition(location, DAILY, day))
    assert info.value.file == str(path) and info.value.key == day
    assert str(info.value).startswith(f"{day}: {path}: ")


CORRUPTIONS = 48


def test_overwritten_bytes_are_always_detected(tmp_path: Path) -> None:
    """A sweep: random overwrites of 1 B to 64 KiB at random places in the data pages of a
    300,000-row feature file, footer intact; every one fails the read, naming the file.

    Run with ``-s`` for the figure (docs/reliability.md)."""
    location = DeltaLocation(str(tmp_path / "features"))
    day = DAYS[0]
    replace_partition(location, DAILY, day, generate_partition(_date(day), 300_000), raw_schema())
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
            for _batch in snapshot(location, DAILY).batches(day):
                pass
        except UnreadableDataError as error:
            assert error.file == str(path)
            detected += 1
    print(f"\n{detected} of {CORRUPTIONS} corruptions detected ({len(original):,}-byte file)")
    assert detected == CORRUPTIONS


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


# --------------------------------------------------------------------------- concurrent writers

SCHEMA = pa.schema(
    [
        pa.field("customer_id", pa.int64(), nullable=False),
        pa.field("event_date", pa.date32(), nullable=False),
        pa.field("value", pa.float64()),
    ]
)


def _batch(day: str, ids: list[int], value: float) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(
        {"customer_id": ids, "event_date": [_date(day)] * len(ids), "value": [value] * len(ids)},
        schema=SCHEMA,
    )


def _meanwhile(
    location: DeltaLocation, day: str, value: float, other_day: str
) -> Iterator[pa.RecordBatch]:
    """A producer that, after its rows are written, lets another writer commit ``other_day``
    (before this write commits)."""
    yield _batch(day, [1, 2, 3], value)
    replace_partition(location, DAILY, other_day, [_batch(other_day, [7], -value)], SCHEMA)


def test_the_recorded_version_is_our_own_commit(tmp_path: Path) -> None:
    """Another writer replaces a different day while ours is in flight: Delta reports a
    conflict (that commit removed files ours could have read), the write is retried, and the
    version recorded is ours - in the write's result and in the lineage."""
    location = DeltaLocation(str(tmp_path / "t"))
    for day in DAYS:
        replace_partition(location, DAILY, day, [_batch(day, [0], 0.0)], SCHEMA)
    stale = location.open()
    result = replace_partition(
        location,
        DAILY,
        DAYS[0],
        _meanwhile(location, DAYS[0], 1.0, DAYS[1]),
        SCHEMA,
        commit_metadata={"partition": DAYS[0]},
    )
    assert result.version == 4  # 3: the other writer's commit of DAYS[1]
    mine = read_commit(location.files(), result.version)
    assert mine is not None and mine["operationParameters"]["predicate"].endswith("2026-11-02'")
    other = read_commit(location.files(), 3)
    assert other is not None and other["operationParameters"]["predicate"].endswith("2026-11-03'")
    assert sorted(
        r["value"] for b in read_partition(location, DAILY, DAYS[1]) for r in b.to_pylist()
    ) == [-1.0]
    # A later writer, and a stale table object, do not change what lineage says.
    replace_partition(location, DAILY, DAYS[2], [_batch(DAYS[2], [5], 5.0)], SCHEMA)
    assert stale.version() == 2
    commit = latest_commit(location, DAYS[0])
    assert commit is not None and commit.version == result.version
    assert commit.info[WRITE_ID_KEY] == mine[WRITE_ID_KEY]


def test_concurrent_writers_of_different_days_each_record_their_own_commit(
    tmp_path: Path,
) -> None:
    location = DeltaLocation(str(tmp_path / "t"))
    for day in DAYS:
        replace_partition(location, DAILY, day, [_batch(day, [0], 0.0)], SCHEMA)
    results: dict[str, list[int]] = {day: [] for day in DAYS}
    errors: list[BaseException] = []

    def writer(day: str) -> None:
        try:
            for round_ in range(6):
                batch = _batch(day, [round_], float(round_))
                results[day].append(
                    replace_partition(location, DAILY, day, [batch], SCHEMA).version
                )
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
    replace_partition(location, DAILY, DAYS[0], [_batch(DAYS[0], [0], 0.0)], SCHEMA)
    with pytest.raises(ConcurrentWriteError) as info:
        replace_partition(
            location, DAILY, DAYS[0], _meanwhile(location, DAYS[0], 1.0, DAYS[0]), SCHEMA
        )
    message = str(info.value)
    assert f"another writer committed partition {DAYS[0]}" in message
    assert f"rerun to write {DAYS[0]} again" in message
    assert "isolation" not in message.lower()
    # The other writer's rows, once; nothing of ours, and no orphan file of ours left.
    rows = [r for b in read_partition(location, DAILY, DAYS[0]) for r in b.to_pylist()]
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
    replace_partition(location, DAILY, DAYS[1], [_batch(DAYS[1], [0], 0.0)], SCHEMA)
    with pytest.raises(ConcurrentWriteError, match="rerun"):
        replace_partition(
            location, DAILY, DAYS[0], _meanwhile(location, DAYS[0], 1.0, DAYS[0]), SCHEMA
        )
    assert count_partition(location, DAILY, DAYS[0]) == 1


def test_commits_carry_rows_and_file_statistics(tmp_path: Path) -> None:
    location = DeltaLocation(str(tmp_path / "t"))
    result = replace_partition(location, DAILY, DAYS[0], [_batch(DAYS[0], [1, 2, 5], 1.0)], SCHEMA)
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
        replace_partition(location, DAILY, day, [_batch(day, [0], 0.0)], SCHEMA)
    real = DeltaTable.create_write_transaction
    others: list[int] = []

    def then_another_writer(self: DeltaTable, *args, **kwargs) -> None:
        real(self, *args, **kwargs)
        if not others:  # once: the other writer's own commit goes through unpatched
            others.append(0)
            other = replace_partition(location, DAILY, DAYS[1], [_batch(DAYS[1], [9], 9.0)], SCHEMA)
            others[0] = other.version

    monkeypatch.setattr(DeltaTable, "create_write_transaction", then_another_writer)
    monkeypatch.setattr(DeltaTable, "history", _history_after_another_commit(location))
    result = replace_partition(
        location,
        DAILY,
        DAYS[0],
        [_batch(DAYS[0], [1], 1.0)],
        SCHEMA,
        commit_metadata={"partition": DAYS[0]},
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
            replace_partition(location, DAILY, DAYS[2], [_batch(DAYS[2], [8], 8.0)], SCHEMA)
        return real(self, limit)

    return history


def test_lineage_versions_are_right_while_another_writer_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit landing after the table was opened does not shift the versions lineage reads
    (``DeltaTable.history()`` numbers them from the opened version: off by one here)."""
    location = DeltaLocation(str(tmp_path / "t"))
    for day in DAYS:
        stamp = {"partition": day}
        replace_partition(
            location, DAILY, day, [_batch(day, [0], 0.0)], SCHEMA, commit_metadata=stamp
        )
    real_open = DeltaLocation.open

    def open_then_another_commit(self: DeltaLocation) -> DeltaTable:
        table = real_open(self)
        monkeypatch.setattr(DeltaLocation, "open", real_open)
        replace_partition(location, DAILY, DAYS[2], [_batch(DAYS[2], [1], 1.0)], SCHEMA)
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
    replace_partition(location, DAILY, day, [_batch(day, [1, 2], 1.5)], SCHEMA)
    relative = f"event_date={day}/part-00000-text-c000.zstd.parquet"
    path = Path(location.uri) / relative
    pq.write_table(pa.table({"customer_id": [3], "value": ["2.5"]}), path)
    table = location.open()
    table.create_write_transaction(
        [AddAction(relative, path.stat().st_size, {"event_date": day}, 0, True, "{}")],
        mode="append",
        schema=table.schema(),
        partition_by=["event_date"],
    )
    with pytest.raises(UnreadableDataError) as info:
        list(read_partition(location, DAILY, day))
    assert str(info.value) == (
        f"{day}: {path}: column 'value' is stored as string, the table declares double"
    )
