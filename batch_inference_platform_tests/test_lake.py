"""The Delta lake layer: one-transaction partition replaces, pinned streaming reads, the
background prefetch that feeds the writer, and the upserting dataset catalog."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Generator, Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from batch_inference_platform.lib.lake.catalog import CatalogEntry, record
from batch_inference_platform.lib.lake.prefetch import prefetch
from batch_inference_platform.lib.lake.tables import (
    DeltaLocation,
    PartitionWriteError,
    TableNotFoundError,
    count_partition,
    read_partition,
    replace_partition,
    snapshot,
    table_schema,
)

from .conftest import read_all

DAY_1 = dt.date(2026, 11, 2)
DAY_2 = dt.date(2026, 11, 3)
DAY_3 = dt.date(2026, 11, 4)
SCHEMA = pa.schema(
    [
        pa.field("customer_id", pa.int64(), nullable=False),
        pa.field("event_date", pa.date32(), nullable=False),
        pa.field("value", pa.float64()),
    ]
)


def _batch(day: dt.date, ids: list[int], value: float = 0.0) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(
        {"customer_id": ids, "event_date": [day] * len(ids), "value": [value] * len(ids)},
        schema=SCHEMA,
    )


def _rows(location: DeltaLocation, day: dt.date) -> list[tuple[int, float]]:
    return sorted(
        (row["customer_id"], row["value"])
        for batch in read_partition(location, day)
        for row in batch.to_pylist()
    )


@pytest.fixture
def table(tmp_path: Path) -> DeltaLocation:
    """A table holding DAY_1 (ids 1-3, value 1.0, version 0) and DAY_2 (ids 4-5, version 1)."""
    location = DeltaLocation(str(tmp_path / "table"))
    assert replace_partition(location, DAY_1, [_batch(DAY_1, [1, 2, 3], 1.0)], SCHEMA).version == 0
    assert replace_partition(location, DAY_2, [_batch(DAY_2, [4, 5], 2.0)], SCHEMA).version == 1
    return location


# --------------------------------------------------------------------------- replace_partition


def test_replace_creates_the_table_partitioned_by_date(tmp_path: Path) -> None:
    location = DeltaLocation(str(tmp_path / "new"))
    assert not location.exists()
    commit = replace_partition(location, DAY_1, [_batch(DAY_1, [1, 2]), _batch(DAY_1, [3])], SCHEMA)
    assert (commit.version, commit.rows) == (0, 3)
    assert location.open().metadata().partition_columns == ["event_date"]
    assert table_schema(location).names == SCHEMA.names


def test_replace_touches_only_its_day(table: DeltaLocation) -> None:
    commit = replace_partition(table, DAY_1, [_batch(DAY_1, [1, 9], 7.0)], SCHEMA)

    assert (commit.version, commit.rows) == (2, 2)
    assert table.open().version() == 2
    assert _rows(table, DAY_1) == [(1, 7.0), (9, 7.0)]
    assert _rows(table, DAY_2) == [(4, 2.0), (5, 2.0)]
    commit_info = table.open().history(limit=1)[0]
    assert commit_info["operation"] == "WRITE"
    assert "2026-11-02" in commit_info["operationParameters"]["predicate"]


def test_replace_reports_its_own_version_and_metadata(table: DeltaLocation) -> None:
    commit = replace_partition(
        table, DAY_3, [_batch(DAY_3, [6])], SCHEMA, commit_metadata={"dagster_run_id": "r-1"}
    )
    assert commit.version == 2
    info = next(c for c in table.open().history() if c["version"] == commit.version)
    assert info["dagster_run_id"] == "r-1"


def test_replace_with_no_rows_empties_the_day(table: DeltaLocation) -> None:
    commit = replace_partition(table, DAY_1, [], SCHEMA)
    assert (commit.version, commit.rows) == (2, 0)
    assert count_partition(table, DAY_1) == 0
    assert count_partition(table, DAY_2) == 2


def test_failing_producer_commits_nothing(table: DeltaLocation) -> None:
    produced = []

    def producer() -> Iterator[pa.RecordBatch]:
        produced.append(1)
        yield _batch(DAY_1, [7, 8], 9.0)
        produced.append(2)
        raise RuntimeError("feature source went away")

    files_before = sorted(Path(table.uri).rglob("*.parquet"))
    with pytest.raises(RuntimeError, match="feature source went away"):
        replace_partition(table, DAY_1, producer(), SCHEMA)

    assert produced == [1, 2]  # it did fail mid-stream, after a batch went to the writer
    assert sorted(Path(table.uri).rglob("*.parquet")) == files_before  # no orphan left
    assert table.open().version() == 1
    assert _rows(table, DAY_1) == [(1, 1.0), (2, 1.0), (3, 1.0)]
    assert _rows(table, DAY_2) == [(4, 2.0), (5, 2.0)]


def test_rows_of_another_day_are_refused(table: DeltaLocation) -> None:
    with pytest.raises(PartitionWriteError, match="a row dated 2026-11-03 in the write of"):
        replace_partition(table, DAY_1, [_batch(DAY_1, [1]), _batch(DAY_2, [99])], SCHEMA)

    assert table.open().version() == 1
    assert _rows(table, DAY_1) == [(1, 1.0), (2, 1.0), (3, 1.0)]
    assert _rows(table, DAY_2) == [(4, 2.0), (5, 2.0)]


# --------------------------------------------------------------------------- reads


def test_reads_stream_batches_of_one_day(table: DeltaLocation) -> None:
    replace_partition(table, DAY_3, [_batch(DAY_3, list(range(100, 150)))], SCHEMA)
    batches = list(read_partition(table, DAY_3, columns=["customer_id"], batch_rows=16))
    assert all(b.num_rows <= 16 for b in batches)
    assert all(b.schema.names == ["customer_id"] for b in batches)
    assert sum(b.num_rows for b in batches) == 50
    assert count_partition(table, DAY_3) == 50
    assert count_partition(table, dt.date(2030, 1, 1)) == 0


def test_snapshot_stays_at_its_version(table: DeltaLocation) -> None:
    pinned = snapshot(table)
    replace_partition(table, DAY_1, [_batch(DAY_1, [42], 4.2)], SCHEMA)
    replace_partition(table, DAY_3, [_batch(DAY_3, [43])], SCHEMA)

    assert pinned.version == 1
    assert pinned.count(DAY_1) == 3
    assert sorted(r["customer_id"] for b in pinned.batches(DAY_1) for r in b.to_pylist()) == [
        1,
        2,
        3,
    ]
    assert pinned.days() == [DAY_1, DAY_2]
    assert snapshot(table).days() == [DAY_1, DAY_2, DAY_3]
    assert _rows(table, DAY_1) == [(42, 4.2)]


def test_missing_table(tmp_path: Path) -> None:
    location = DeltaLocation(str(tmp_path / "absent"))
    assert count_partition(location, DAY_1) == 0
    with pytest.raises(TableNotFoundError, match="absent"):
        table_schema(location)


# --------------------------------------------------------------------------- prefetch


def test_prefetch_yields_everything_in_order() -> None:
    assert list(prefetch(iter(range(100)), depth=3)) == list(range(100))
    assert list(prefetch([])) == []


def test_prefetch_reraises_the_producer_error() -> None:
    error = ValueError("bad batch")

    def producer() -> Iterator[int]:
        yield 1
        yield 2
        raise error

    seen = []
    with pytest.raises(ValueError) as info:
        for item in prefetch(producer()):
            seen.append(item)
    assert info.value is error
    assert seen == [1, 2]


def test_prefetch_runs_at_most_depth_ahead_and_stops_with_the_consumer() -> None:
    produced: list[int] = []

    def endless() -> Iterator[int]:
        n = 0
        while True:
            produced.append(n)
            yield n
            n += 1

    stream = prefetch(endless(), depth=2)
    assert isinstance(stream, Generator)
    assert next(stream) == 0
    time.sleep(0.3)
    # One taken, two queued, one more waiting to be put.
    assert len(produced) <= 4
    stream.close()
    count = len(produced)
    time.sleep(0.3)
    assert len(produced) == count
    assert not any(t.name == "batch-prefetch" and t.is_alive() for t in threading.enumerate())


# --------------------------------------------------------------------------- catalog


def _entry(version: int, rows: int, day: dt.date = DAY_1) -> CatalogEntry:
    return CatalogEntry(
        dataset="predictions",
        table_uri="/lake/predictions/m",
        partition=day,
        delta_version=version,
        schema_hash="abc",
        rows=rows,
        upstream_dataset="validated_features",
        upstream_delta_version=3,
        feature_table_version=2,
        model_name="m",
        model_version=1,
        run_id="run-1",
        recorded_at=dt.datetime(2026, 11, 3, tzinfo=dt.UTC),
    )


def test_catalog_record_is_an_upsert(tmp_path: Path) -> None:
    catalog = DeltaLocation(str(tmp_path / "catalog"))
    assert record(catalog, [_entry(0, 10)]) == 0
    assert record(catalog, [_entry(0, 10)]) == 1
    assert read_all(catalog).num_rows == 1

    record(catalog, [_entry(0, 11)])  # same version recorded again, with new figures
    rows = read_all(catalog).to_pylist()
    assert [(r["delta_version"], r["rows"]) for r in rows] == [(0, 11)]

    record(catalog, [_entry(1, 12), _entry(0, 11, DAY_2)])  # new version, other day
    keys = sorted((r["partition"], r["delta_version"]) for r in read_all(catalog).to_pylist())
    assert keys == [(DAY_1, 0), (DAY_1, 1), (DAY_2, 0)]


# --------------------------------------------------------------------------- delta-rs#2184

_ROUND_TRIP = textwrap.dedent(
    """
    import datetime as dt, sys
    import pyarrow as pa
    from batch_inference_platform.lib.features.synthetic import generate_partition, raw_schema
    from batch_inference_platform.lib.lake.catalog import CatalogEntry, record
    from batch_inference_platform.lib.lake.tables import (
        DeltaLocation, count_partition, read_partition, replace_partition, snapshot, table_schema,
    )

    root = sys.argv[1]
    features = DeltaLocation(root + "/features")
    days = [dt.date(2026, 11, 2), dt.date(2026, 11, 3)]
    for day in days:
        replace_partition(features, day, generate_partition(day, 2000, batch_rows=500),
                          raw_schema())
    replace_partition(features, days[0], generate_partition(days[0], 1500), raw_schema())
    rows = sum(b.num_rows for b in read_partition(features, days[0]))
    pinned = snapshot(features)
    assert rows == count_partition(features, days[0]) == pinned.count(days[0]) == 1500
    assert sum(b.num_rows for b in pinned.batches(days[1], columns=["age"])) == 2000
    assert table_schema(features).names == raw_schema().names
    entry = CatalogEntry("features", features.uri, days[0], 2, "h", rows, None, None, None,
                         None, None, "run", dt.datetime.now(dt.UTC))
    record(DeltaLocation(root + "/catalog"), [entry])
    record(DeltaLocation(root + "/catalog"), [entry])
    print("round trip ok", rows)
    """
)


def test_lake_round_trip_exits_cleanly(tmp_path: Path) -> None:
    """Writing and reading through lib.lake must not abort the interpreter at exit (134)."""
    script = tmp_path / "round_trip.py"
    script.write_text(_ROUND_TRIP)
    # Several processes: the exit-time abort is a race, so one clean exit proves little.
    processes = [
        subprocess.Popen(
            [sys.executable, str(script), str(tmp_path / f"lake{i}")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    for process in processes:
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, f"exit {process.returncode}\n{stderr[-2000:]}"
        assert "round trip ok 1500" in stdout
