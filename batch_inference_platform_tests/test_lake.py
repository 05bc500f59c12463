"""The Delta lake layer: one-transaction partition replaces, pinned streaming reads, the
background prefetch that feeds the writer, and the upserting dataset catalog."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Generator, Iterable, Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from batch_inference_platform.lib.deployments.partitioning import (
    WHOLE_TABLE,
    Partitioning,
    PartitionKind,
)
from batch_inference_platform.lib.lake.catalog import CatalogEntry, record
from batch_inference_platform.lib.lake.prefetch import prefetch
from batch_inference_platform.lib.lake.tables import (
    DeltaLocation,
    PartitionWriteError,
    TableNotFoundError,
    count_partition,
    partition_predicate,
    read_partition,
    replace_partition,
    snapshot,
    table_schema,
)

DAILY = Partitioning(PartitionKind.DAILY, "event_date")
DAY_1, DAY_2, DAY_3 = "2026-11-02", "2026-11-03", "2026-11-04"
SCHEMA = pa.schema(
    [
        pa.field("customer_id", pa.int64(), nullable=False),
        pa.field("event_date", pa.date32(), nullable=False),
        pa.field("value", pa.float64()),
    ]
)


def _batch(day: str, ids: list[int], value: float = 0.0) -> pa.RecordBatch:
    dates = [dt.date.fromisoformat(day)] * len(ids)
    return pa.RecordBatch.from_pydict(
        {"customer_id": ids, "event_date": dates, "value": [value] * len(ids)},
        schema=SCHEMA,
    )


def _replace(location: DeltaLocation, day: str, batches: Iterable[pa.RecordBatch], **kwargs):
    return replace_partition(location, DAILY, day, batches, SCHEMA, **kwargs)


def _rows(location: DeltaLocation, day: str) -> list[tuple[int, float]]:
    return sorted(
        (row["customer_id"], row["value"])
        for batch in read_partition(location, DAILY, day)
        for row in batch.to_pylist()
    )


@pytest.fixture
def table(tmp_path: Path) -> DeltaLocation:
    """A table holding DAY_1 (ids 1-3, value 1.0, version 0) and DAY_2 (ids 4-5, version 1)."""
    location = DeltaLocation(str(tmp_path / "table"))
    assert _replace(location, DAY_1, [_batch(DAY_1, [1, 2, 3], 1.0)]).version == 0
    assert _replace(location, DAY_2, [_batch(DAY_2, [4, 5], 2.0)]).version == 1
    return location


def read_all(location: DeltaLocation) -> pa.Table:
    """The whole current version of a small table, streamed (not ``to_table``: delta-rs#2184)."""
    dataset = location.open().to_pyarrow_dataset()
    return pa.Table.from_batches(list(dataset.to_batches()), dataset.schema)


# --------------------------------------------------------------------------- replace_partition


def test_replace_creates_the_table_partitioned_by_date(tmp_path: Path) -> None:
    location = DeltaLocation(str(tmp_path / "new"))
    assert not location.exists()
    commit = _replace(location, DAY_1, [_batch(DAY_1, [1, 2]), _batch(DAY_1, [3])])
    assert (commit.version, commit.rows) == (0, 3)
    assert location.open().metadata().partition_columns == ["event_date"]
    assert table_schema(location).names == SCHEMA.names


def test_replace_touches_only_its_day(table: DeltaLocation) -> None:
    commit = _replace(table, DAY_1, [_batch(DAY_1, [1, 9], 7.0)])

    assert (commit.version, commit.rows) == (2, 2)
    assert table.open().version() == 2
    assert _rows(table, DAY_1) == [(1, 7.0), (9, 7.0)]
    assert _rows(table, DAY_2) == [(4, 2.0), (5, 2.0)]
    commit_info = table.open().history(limit=1)[0]
    assert commit_info["operation"] == "WRITE"
    assert "2026-11-02" in commit_info["operationParameters"]["predicate"]


def test_replace_reports_its_own_version_and_metadata(table: DeltaLocation) -> None:
    commit = _replace(table, DAY_3, [_batch(DAY_3, [6])], commit_metadata={"dagster_run_id": "r-1"})
    assert commit.version == 2
    info = next(c for c in table.open().history() if c["version"] == commit.version)
    assert info["dagster_run_id"] == "r-1"


def test_replace_with_no_rows_empties_the_day(table: DeltaLocation) -> None:
    commit = _replace(table, DAY_1, [])
    assert (commit.version, commit.rows) == (2, 0)
    assert count_partition(table, DAILY, DAY_1) == 0
    assert count_partition(table, DAILY, DAY_2) == 2
    assert snapshot(table, DAILY).partitions() == [DAY_2]


def test_failing_producer_commits_nothing(table: DeltaLocation) -> None:
    produced = []

    def producer() -> Iterator[pa.RecordBatch]:
        produced.append(1)
        yield _batch(DAY_1, [7, 8], 9.0)
        produced.append(2)
        raise RuntimeError("feature source went away")

    files_before = sorted(Path(table.uri).rglob("*.parquet"))
    with pytest.raises(RuntimeError, match="feature source went away"):
        _replace(table, DAY_1, producer())

    assert produced == [1, 2]  # it did fail mid-stream, after a batch went to the writer
    assert sorted(Path(table.uri).rglob("*.parquet")) == files_before  # no orphan left
    assert table.open().version() == 1
    assert _rows(table, DAY_1) == [(1, 1.0), (2, 1.0), (3, 1.0)]
    assert _rows(table, DAY_2) == [(4, 2.0), (5, 2.0)]


def test_rows_of_another_day_are_refused(table: DeltaLocation) -> None:
    with pytest.raises(
        PartitionWriteError, match="a row with event_date 2026-11-03 in the write of partition"
    ):
        _replace(table, DAY_1, [_batch(DAY_1, [1]), _batch(DAY_2, [99])])

    assert table.open().version() == 1
    assert _rows(table, DAY_1) == [(1, 1.0), (2, 1.0), (3, 1.0)]
    assert _rows(table, DAY_2) == [(4, 2.0), (5, 2.0)]


# --------------------------------------------------------------------------- reads


def test_reads_stream_batches_of_one_day(table: DeltaLocation) -> None:
    _replace(table, DAY_3, [_batch(DAY_3, list(range(100, 150)))])
    batches = list(read_partition(table, DAILY, DAY_3, columns=["customer_id"], batch_rows=16))
    assert all(b.num_rows <= 16 for b in batches)
    assert all(b.schema.names == ["customer_id"] for b in batches)
    assert sum(b.num_rows for b in batches) == 50
    assert count_partition(table, DAILY, DAY_3) == 50
    assert count_partition(table, DAILY, "2030-01-01") == 0


def test_snapshot_stays_at_its_version(table: DeltaLocation) -> None:
    pinned = snapshot(table, DAILY)
    _replace(table, DAY_1, [_batch(DAY_1, [42], 4.2)])
    _replace(table, DAY_3, [_batch(DAY_3, [43])])

    assert pinned.version == 1
    assert pinned.count(DAY_1) == 3
    assert sorted(r["customer_id"] for b in pinned.batches(DAY_1) for r in b.to_pylist()) == [
        1,
        2,
        3,
    ]
    assert pinned.partitions() == [DAY_1, DAY_2]
    assert snapshot(table, DAILY).partitions() == [DAY_1, DAY_2, DAY_3]
    assert pinned.partitioning == DAILY
    assert _rows(table, DAY_1) == [(42, 4.2)]


def test_missing_table(tmp_path: Path) -> None:
    location = DeltaLocation(str(tmp_path / "absent"))
    assert count_partition(location, DAILY, DAY_1) == 0
    with pytest.raises(TableNotFoundError, match="absent"):
        table_schema(location)


# --------------------------------------------------------------------------- other partitionings

HOURLY = Partitioning(PartitionKind.HOURLY, "event_hour")
HOUR_6, HOUR_7 = "2026-11-01-06:00", "2026-11-01-07:00"
HOURLY_SCHEMA = pa.schema(
    [
        pa.field("account", pa.string(), nullable=False),
        pa.field("event_hour", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("value", pa.float64()),
    ]
)
UNPARTITIONED = Partitioning(PartitionKind.NONE)
FLAT_SCHEMA = pa.schema(
    [pa.field("sku", pa.string(), nullable=False), pa.field("value", pa.float64())]
)


def _hour_batch(key: str, accounts: list[str], value: float) -> pa.RecordBatch:
    hour = dt.datetime.strptime(key, "%Y-%m-%d-%H:%M").replace(tzinfo=dt.UTC)
    return pa.RecordBatch.from_pydict(
        {
            "account": accounts,
            "event_hour": [hour] * len(accounts),
            "value": [value] * len(accounts),
        },
        schema=HOURLY_SCHEMA,
    )


def _hour_rows(location: DeltaLocation, key: str) -> list[tuple[str, dt.datetime, float]]:
    return sorted(
        (r["account"], r["event_hour"], r["value"])
        for b in read_partition(location, HOURLY, key)
        for r in b.to_pylist()
    )


def test_an_hourly_table_replaces_one_hour_and_keeps_the_other(tmp_path: Path) -> None:
    location = DeltaLocation(str(tmp_path / "hourly"))
    replace_partition(
        location, HOURLY, HOUR_6, [_hour_batch(HOUR_6, ["a", "b"], 1.0)], HOURLY_SCHEMA
    )
    replace_partition(location, HOURLY, HOUR_7, [_hour_batch(HOUR_7, ["c"], 2.0)], HOURLY_SCHEMA)
    commit = replace_partition(
        location, HOURLY, HOUR_6, [_hour_batch(HOUR_6, ["d"], 3.0)], HOURLY_SCHEMA
    )

    assert (commit.version, commit.rows) == (2, 1)
    six = dt.datetime(2026, 11, 1, 6, tzinfo=dt.UTC)
    seven = dt.datetime(2026, 11, 1, 7, tzinfo=dt.UTC)
    assert _hour_rows(location, HOUR_6) == [("d", six, 3.0)]
    assert _hour_rows(location, HOUR_7) == [("c", seven, 2.0)]
    pinned = snapshot(location, HOURLY)
    assert pinned.partitions() == [HOUR_6, HOUR_7]
    assert (pinned.count(HOUR_6), pinned.count(HOUR_7), pinned.count("2026-11-01-08:00")) == (
        1,
        1,
        0,
    )
    assert pinned.file_count(HOUR_6) == 1
    table = location.open()
    assert table.metadata().partition_columns == ["event_hour"]
    # Delta's textual form of a timestamp partition value, read back by key_of.
    values = sorted(p["event_hour"] for p in table.partitions())
    assert values == ["2026-11-01 06:00:00", "2026-11-01 07:00:00"]
    assert [HOURLY.key_of(v) for v in values] == [HOUR_6, HOUR_7]
    # delta-rs's own predicate evaluation (a DELETE) selects exactly that hour.
    assert partition_predicate(HOURLY, HOUR_6) == "event_hour = '2026-11-01T06:00:00Z'"
    table.delete(partition_predicate(HOURLY, HOUR_6))
    assert snapshot(location, HOURLY).partitions() == [HOUR_7]
    assert _hour_rows(location, HOUR_7) == [("c", seven, 2.0)]


def test_rows_of_another_hour_are_refused(tmp_path: Path) -> None:
    location = DeltaLocation(str(tmp_path / "hourly"))
    with pytest.raises(PartitionWriteError, match="event_hour 2026-11-01 07:00:00"):
        replace_partition(
            location,
            HOURLY,
            HOUR_6,
            [_hour_batch(HOUR_6, ["a"], 1.0), _hour_batch(HOUR_7, ["b"], 1.0)],
            HOURLY_SCHEMA,
        )
    assert not location.exists()
    with pytest.raises(ValueError, match="is not a hourly partition key"):
        replace_partition(location, HOURLY, "2026-11-01", [], HOURLY_SCHEMA)
    with pytest.raises(PartitionWriteError, match="a hourly partition column is timestamp"):
        replace_partition(
            location, HOURLY, HOUR_6, [], HOURLY_SCHEMA.set(1, pa.field("event_hour", pa.date32()))
        )


def _flat(skus: list[str], value: float) -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(
        {"sku": skus, "value": [value] * len(skus)}, schema=FLAT_SCHEMA
    )


def test_an_unpartitioned_table_is_replaced_whole(tmp_path: Path) -> None:
    location = DeltaLocation(str(tmp_path / "flat"))
    first = replace_partition(
        location,
        UNPARTITIONED,
        WHOLE_TABLE,
        [_flat(["a", "b"], 1.0), _flat(["c"], 1.0)],
        FLAT_SCHEMA,
    )
    second = replace_partition(
        location,
        UNPARTITIONED,
        WHOLE_TABLE,
        [_flat(["x"], 2.0)],
        FLAT_SCHEMA,
        commit_metadata={"partition": WHOLE_TABLE},
    )

    assert (first.version, first.rows, second.version, second.rows) == (0, 3, 1, 1)
    assert location.open().version() == 1  # one Delta version per replace
    assert location.open().metadata().partition_columns == []
    rows = [r for b in read_partition(location, UNPARTITIONED, WHOLE_TABLE) for r in b.to_pylist()]
    assert rows == [{"sku": "x", "value": 2.0}]
    assert count_partition(location, UNPARTITIONED, WHOLE_TABLE) == 1
    assert snapshot(location, UNPARTITIONED).partitions() == [WHOLE_TABLE]
    info = next(c for c in location.open().history() if c["version"] == 1)
    assert info["operation"] == "WRITE" and info["partition"] == WHOLE_TABLE
    assert partition_predicate(UNPARTITIONED, WHOLE_TABLE) == "true"
    # An empty replace empties it; a day's key is not a key of an unpartitioned table.
    replace_partition(location, UNPARTITIONED, WHOLE_TABLE, [], FLAT_SCHEMA)
    assert snapshot(location, UNPARTITIONED).partitions() == []
    with pytest.raises(ValueError, match="its one key is 'all'"):
        replace_partition(location, UNPARTITIONED, DAY_1, [], FLAT_SCHEMA)


def test_a_table_is_written_with_its_own_partitioning_only(tmp_path: Path) -> None:
    location = DeltaLocation(str(tmp_path / "flat"))
    replace_partition(location, UNPARTITIONED, WHOLE_TABLE, [_flat(["a"], 1.0)], FLAT_SCHEMA)
    schema = FLAT_SCHEMA.append(pa.field("event_date", pa.date32(), nullable=False))
    with pytest.raises(PartitionWriteError, match="partitioned by nothing, the write by"):
        replace_partition(location, DAILY, DAY_1, [], schema)


def test_a_string_keyed_table(tmp_path: Path) -> None:
    """Keys are any columns: here a string, and rows are read back by partition as written."""
    schema = pa.schema(
        [
            pa.field("order_ref", pa.string(), nullable=False),
            pa.field("event_date", pa.date32(), nullable=False),
            pa.field("amount", pa.float64()),
        ]
    )

    def batch(day: str, refs: list[str]) -> pa.RecordBatch:
        return pa.RecordBatch.from_pydict(
            {
                "order_ref": refs,
                "event_date": [dt.date.fromisoformat(day)] * len(refs),
                "amount": [float(len(r)) for r in refs],
            },
            schema=schema,
        )

    location = DeltaLocation(str(tmp_path / "orders"))
    replace_partition(location, DAILY, DAY_1, [batch(DAY_1, ["A-1", "B-22"])], schema)
    replace_partition(location, DAILY, DAY_2, [batch(DAY_2, ["C-333"])], schema)
    replace_partition(location, DAILY, DAY_1, [batch(DAY_1, ["D-4444"])], schema)

    def refs(day: str) -> list[str]:
        return sorted(
            r["order_ref"] for b in read_partition(location, DAILY, day) for r in b.to_pylist()
        )

    assert (refs(DAY_1), refs(DAY_2)) == (["D-4444"], ["C-333"])
    assert table_schema(location).field("order_ref").type == pa.string()
    assert snapshot(location, DAILY).partitions() == [DAY_1, DAY_2]


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


def _entry(
    version: int, rows: int, day: str = DAY_1, deployment: str = "credit_risk"
) -> CatalogEntry:
    return CatalogEntry(
        deployment=deployment,
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
    # The same dataset version of another deployment is another entry.
    record(catalog, [_entry(0, 5, "2026-11-02-06:00", "churn")])
    keys = sorted(
        (r["deployment"], r["partition"], r["delta_version"]) for r in read_all(catalog).to_pylist()
    )
    assert keys == [
        ("churn", "2026-11-02-06:00", 0),
        ("credit_risk", DAY_1, 0),
        ("credit_risk", DAY_1, 1),
        ("credit_risk", DAY_2, 0),
    ]


# --------------------------------------------------------------------------- delta-rs#2184

_ROUND_TRIP = textwrap.dedent(
    """
    import datetime as dt, sys
    import pyarrow as pa
    from batch_inference_platform.lib.features.synthetic import generate_partition, raw_schema
    from batch_inference_platform.lib.lake.catalog import CatalogEntry, record
    from batch_inference_platform.lib.deployments.partitioning import Partitioning, PartitionKind
    from batch_inference_platform.lib.lake.tables import (
        DeltaLocation, count_partition, read_partition, replace_partition, snapshot, table_schema,
    )

    root = sys.argv[1]
    daily = Partitioning(PartitionKind.DAILY, "event_date")
    features = DeltaLocation(root + "/features")
    days = [dt.date(2026, 11, 2), dt.date(2026, 11, 3)]
    keys = [day.isoformat() for day in days]
    for day, key in zip(days, keys):
        replace_partition(features, daily, key,
                          generate_partition(day, 2000, batch_rows=500), raw_schema())
    replace_partition(features, daily, keys[0], generate_partition(days[0], 1500), raw_schema())
    rows = sum(b.num_rows for b in read_partition(features, daily, keys[0]))
    pinned = snapshot(features, daily)
    assert rows == count_partition(features, daily, keys[0]) == pinned.count(keys[0]) == 1500
    assert sum(b.num_rows for b in pinned.batches(keys[1], columns=["age"])) == 2000
    assert table_schema(features).names == raw_schema().names
    entry = CatalogEntry("credit_risk", "features", features.uri, keys[0], 2, "h", rows, None,
                         None, None, None, None, "run", dt.datetime.now(dt.UTC))
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
