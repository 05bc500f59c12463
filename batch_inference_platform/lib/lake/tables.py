"""Delta tables partitioned by day, by hour or not at all: verified streaming reads and
one-transaction partition replaces.

A partition is named by its key (``2026-11-01``, ``2026-11-01-06:00``, ``all``) and a
``Partitioning`` says which column holds it and how. Every write here replaces exactly one
partition (the whole table when unpartitioned) in a single Delta commit, so a rerun leaves one
copy of the partition's rows and a crash leaves the previous version readable.

Data files are written by pyarrow, not delta-rs: ZSTD-compressed Parquet with a CRC32 checksum
on every page (delta-rs's writer cannot write page checksums), streamed row group by row group
into the table's storage, then committed with ``create_write_transaction``. Every read verifies
the checksums, so bytes overwritten after a file was written fail the read, naming the file,
instead of decoding into wrong values.

Reads go through ``to_pyarrow_dataset`` and stream record batches file by file: they never
materialize a whole partition, and they avoid the delta-rs exit-time abort that
``to_pyarrow_table``/``to_pandas`` - and ``dataset.to_table()`` - trigger (delta-io/delta-rs#2184).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import math
import random
import re
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from deltalake import CommitProperties, DeltaTable
from deltalake import Schema as DeltaSchema
from deltalake.exceptions import CommitFailedError, DeltaError
from deltalake.transaction import (
    AddAction,
    RemoveAction,
    Transaction,
    create_table_with_add_actions,
)

from batch_inference_platform.lib.deployments.partitioning import WHOLE_TABLE, Partitioning
from batch_inference_platform.lib.lake.errors import (
    ConcurrentWriteError,
    UnreadableDataError,
    error_summary,
)
from batch_inference_platform.lib.lake.files import TableFiles
from batch_inference_platform.lib.lake.log import find_commit
from batch_inference_platform.lib.lake.prefetch import prefetch

DEFAULT_BATCH_ROWS = 65_536
ROW_GROUP_ROWS = 262_144
"""Rows per Parquet row group we write: a reader decodes one row group at a time, so this
bounds read memory (about 64 MB for a 30-feature partition) whatever the partition's size."""
FILE_ROWS = 16 * ROW_GROUP_ROWS
"""Rows per data file; a larger partition is written as several files in the same commit."""
BATCH_READAHEAD = 2
"""Scanner read-ahead: pyarrow's default (16 batches) held 2.5 GB and ran 2.4x slower on a
10M-row partition on 2 cores than this (1.0 GB); decoding stays multi-threaded."""
COMPRESSION = "zstd"
COMMIT_ATTEMPTS = 20
"""Commits retried (after a short random pause) when another writer's commit on other
partitions got in first: Delta's check conflicts with any commit that removed files."""
WRITE_ID_KEY = "bip.write_id"
APP_ID_PREFIX = "bip.partition:"
"""Delta app transaction id stamped on each partition write: two writers of the same
partition conflict in Delta's own conflict check, whatever else they touch."""
SCAN_OPTIONS = ds.ParquetFragmentScanOptions(pre_buffer=True, page_checksum_verification=True)
_MIN_MAX_TYPES = (pa.types.is_integer, pa.types.is_floating, pa.types.is_date)


@dataclass(frozen=True)
class DeltaLocation:
    """Where a Delta table lives and how to reach it (credentials stay in storage_options)."""

    uri: str
    storage_options: Mapping[str, str] | None = None

    @property
    def options(self) -> dict[str, str] | None:
        return dict(self.storage_options) if self.storage_options else None

    def exists(self) -> bool:
        return DeltaTable.is_deltatable(self.uri, storage_options=self.options)

    def open(self) -> DeltaTable:
        if not self.exists():
            raise TableNotFoundError(f"no Delta table at {self.uri}")
        return DeltaTable(self.uri, storage_options=self.options)

    def files(self) -> TableFiles:
        return TableFiles(self.uri, self.options)


class TableNotFoundError(LookupError):
    """The Delta table a step needs has not been written yet."""


class PartitionWriteError(ValueError):
    """Rows handed to a partition write do not fit it (another partition, nulls where the
    table allows none, or a schema that is not the table's); nothing was committed."""


@dataclass(frozen=True)
class CommitResult:
    """What one partition replace committed."""

    version: int
    """The Delta version of this write's own commit (whatever other writers committed)."""
    rows: int
    files: int = 0


def partition_predicate(partitioning: Partitioning, key: str) -> str:
    """The SQL predicate (delta-rs and Spark) that selects exactly partition ``key``;
    ``true`` for an unpartitioned table (its one partition is the whole table)."""
    _check_key(partitioning, key)
    if partitioning.column is None:
        return "true"
    value = partitioning.value(key)
    if isinstance(value, dt.datetime):  # explicit UTC: no engine reads it in its local zone
        text = value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    else:
        text = value.isoformat()
    return f"{_sql_name(partitioning.column)} = '{text}'"


def replace_partition(
    location: DeltaLocation,
    partitioning: Partitioning,
    key: str,
    batches: Iterable[pa.RecordBatch],
    schema: pa.Schema,
    *,
    commit_metadata: Mapping[str, str] | None = None,
) -> CommitResult:
    """Replace partition ``key`` with ``batches`` in one Delta transaction (the whole table
    when ``partitioning`` is unpartitioned; ``key`` is then ``WHOLE_TABLE``).

    The batches are produced in a background thread (so reading and scoring overlap with
    encoding and writing) and streamed into checksummed Parquet files; every row must belong
    to ``key`` (its partition column holds ``partitioning.scalar(key)``). If the producer
    fails, nothing is committed (and the files written so far are deleted). The table is
    created, partitioned by ``partitioning.columns``, on first write. If another writer
    commits the same partition meanwhile, ``ConcurrentWriteError`` says to rerun.
    """
    _check_key(partitioning, key)
    _check_partition_column(location, partitioning, schema)
    table = location.open() if location.exists() else None
    if table is not None:
        _check_partitioned_by(location, table, partitioning)
        _check_schema(location, table, schema)
    before = _partition_files(table, partitioning, key)
    files = location.files()
    writer = _PartitionWriter(files, _folder(partitioning, key), schema, partitioning, key)
    try:
        for batch in prefetch(batches):
            writer.write(batch)
        written = writer.close()
    except BaseException:
        writer.abort()
        raise
    rows = sum(f.rows for f in written)
    adds = [f.add_action(_partition_values(partitioning, key)) for f in written]
    write_id = uuid.uuid4().hex
    parameters = {"mode": "Overwrite", "partitionBy": json.dumps(partitioning.columns)}
    if partitioning.partitioned:
        parameters["predicate"] = partition_predicate(partitioning, key)
    stamp = {
        **(commit_metadata or {}),
        WRITE_ID_KEY: write_id,
        "operationParameters": parameters,
    }
    try:
        read_version = _commit(
            location, table, partitioning, key, before, adds, schema, stamp, rows
        )
    except BaseException:
        for add in adds:  # not committed: no one will ever read them
            files.delete(add.path)
        raise
    version = find_commit(files, WRITE_ID_KEY, write_id, after=read_version)
    return CommitResult(version=version, rows=rows, files=len(adds))


def _commit(
    location: DeltaLocation,
    table: DeltaTable | None,
    partitioning: Partitioning,
    key: str,
    before: frozenset[str],
    adds: list[AddAction],
    schema: pa.Schema,
    stamp: dict[str, Any],
    rows: int,
) -> int:
    """Commit ``adds`` as the new content of partition ``key``; returns the version the
    commit was based on (our commit is the first after it stamped with our write id; -1: we
    created the table)."""
    app = Transaction(f"{APP_ID_PREFIX}{key}", time.time_ns() // 1000)
    if table is None:
        properties = CommitProperties(
            custom_metadata={**stamp, "operationMetrics": _metrics(adds, 0, rows)},
            app_transactions=[app],
        )
        try:
            create_table_with_add_actions(
                location.uri,
                DeltaSchema.from_arrow(schema),
                adds,
                mode="error",
                partition_by=partitioning.columns or None,
                storage_options=location.options,
                commit_properties=properties,
            )
            return -1
        except DeltaError as error:
            if "already exists" not in str(error):
                raise
        table = location.open()  # another writer created it first: commit on top
        _check_unchanged(location, table, partitioning, key, before, None)
        _check_schema(location, table, schema)
        _check_partitioned_by(location, table, partitioning)
    filters = _pruning(partitioning, key)
    for attempt in range(COMMIT_ATTEMPTS):
        if attempt:
            time.sleep(random.uniform(0, min(1.0, 0.05 * attempt)))
        removed = len(_partition_files(table, partitioning, key))
        properties = CommitProperties(
            custom_metadata={**stamp, "operationMetrics": _metrics(adds, removed, rows)},
            app_transactions=[app],
        )
        try:
            table.create_write_transaction(
                _actions(adds),
                mode="overwrite",
                schema=table.schema(),
                partition_by=partitioning.columns or None,
                partition_filters=filters,
                commit_properties=properties,
            )
        except CommitFailedError as error:
            # Delta reports a conflict with any commit that removed files we could have read,
            # other partitions included: retry unless our own partition changed.
            fresh = location.open()
            _check_unchanged(location, fresh, partitioning, key, before, error)
            _check_schema(location, fresh, schema)
            table = fresh
            continue
        return table.version()
    raise ConcurrentWriteError(
        f"{location.uri}: the commit of partition {key} kept conflicting with other writers' "
        f"commits ({COMMIT_ATTEMPTS} attempts); nothing was committed - rerun to write {key} "
        "again"
    )


def _check_unchanged(
    location: DeltaLocation,
    table: DeltaTable,
    partitioning: Partitioning,
    key: str,
    before: frozenset[str],
    error: Exception | None,
) -> None:
    if _partition_files(table, partitioning, key) != before:
        raise ConcurrentWriteError(
            f"another writer committed partition {key} of {location.uri} (now at Delta version "
            f"{table.version()}) while this run was writing it; nothing of this run's write "
            f"was committed - rerun to write {key} again"
        ) from error


def _check_key(partitioning: Partitioning, key: str) -> None:
    """Refuse a key that does not name a partition of ``partitioning``."""
    if not partitioning.partitioned:
        if key != WHOLE_TABLE:
            raise ValueError(
                f"partition key {key!r} of an unpartitioned table: its one key is {WHOLE_TABLE!r}"
            )
        return
    try:
        value = partitioning.value(key)
    except ValueError:
        value = None
    if value is None or partitioning.key_of(value) != key:
        raise ValueError(f"{key!r} is not a {partitioning.kind.value} partition key")


def _check_partition_column(
    location: DeltaLocation, partitioning: Partitioning, schema: pa.Schema
) -> None:
    column = partitioning.column
    if column is None:
        return
    index = schema.get_field_index(column)
    if index < 0:
        raise PartitionWriteError(f"{location.uri}: the rows have no partition column {column!r}")
    if schema.field(index).type != partitioning.arrow_type:
        raise PartitionWriteError(
            f"{location.uri}: partition column {column!r} is {schema.field(index).type}, a "
            f"{partitioning.kind.value} partition column is {partitioning.arrow_type}"
        )


def _check_partitioned_by(
    location: DeltaLocation, table: DeltaTable, partitioning: Partitioning
) -> None:
    existing = list(table.metadata().partition_columns)
    if existing != partitioning.columns:
        raise PartitionWriteError(
            f"{location.uri}: the table is partitioned by {existing or 'nothing'}, the write by "
            f"{partitioning.columns or 'nothing'}"
        )


def _partition_values(partitioning: Partitioning, key: str) -> dict[str, str | None]:
    if partitioning.column is None:
        return {}
    return {partitioning.column: partitioning.delta_value(key)}


def _pruning(partitioning: Partitioning, key: str) -> list[tuple[str, str, Any]] | None:
    """The Delta partition filter selecting ``key`` (None: the whole table)."""
    if partitioning.column is None:
        return None
    return [(partitioning.column, "=", partitioning.delta_value(key))]


def _folder(partitioning: Partitioning, key: str) -> str:
    """The directory a partition's files are written in (Delta reads partition values from
    the log, not from paths): ``column=value`` with only URI-safe characters, so the path
    logged is the path stored."""
    if partitioning.column is None:
        return ""
    folder = f"{partitioning.column}={partitioning.delta_value(key)}"
    return re.sub(r"[^A-Za-z0-9_.=-]", "_", folder)


def _partition_files(
    table: DeltaTable | None, partitioning: Partitioning, key: str
) -> frozenset[str]:
    if table is None:
        return frozenset()
    return frozenset(table.file_uris(file_pruning_predicate=_pruning(partitioning, key)))


def _sql_name(column: str) -> str:
    """A column as SQL names it: plain identifiers bare, others quoted."""
    if re.fullmatch(r"[a-z_][a-z0-9_]*", column):
        return column
    return '"' + column.replace('"', '""') + '"'


def _actions(adds: list[AddAction]) -> list[AddAction | RemoveAction]:
    return list[AddAction | RemoveAction](adds)


def _metrics(adds: list[AddAction], removed: int, rows: int) -> dict[str, int]:
    return {"num_added_files": len(adds), "num_removed_files": removed, "num_added_rows": rows}


def _check_schema(location: DeltaLocation, table: DeltaTable, schema: pa.Schema) -> None:
    """Refuse a write whose columns or types are not the table's (nullability may differ)."""
    ours = _delta_types(DeltaSchema.from_arrow(schema))
    theirs = _delta_types(table.schema())
    if ours != theirs:
        differences = [
            f"{name}: {ours.get(name, 'absent')} (table: {theirs.get(name, 'absent')})"
            for name in sorted(set(ours) | set(theirs))
            if ours.get(name) != theirs.get(name)
        ]
        raise PartitionWriteError(
            f"{location.uri}: the rows' schema is not the table's: " + "; ".join(differences)
        )


def _delta_types(schema: DeltaSchema) -> dict[str, str]:
    fields = json.loads(schema.to_json())["fields"]
    return {f["name"]: json.dumps(f["type"], sort_keys=True) for f in fields}


@dataclass
class _WrittenFile:
    path: str
    size: int
    rows: int
    stats: str

    def add_action(self, partition_values: dict[str, str | None]) -> AddAction:
        return AddAction(
            path=self.path,
            size=self.size,
            partition_values=partition_values,
            modification_time=time.time_ns() // 1_000_000,
            data_change=True,
            stats=self.stats,
        )


@dataclass
class _PartitionWriter:
    """Streams batches into checksummed ZSTD Parquet files under one partition folder, in row
    groups of ``ROW_GROUP_ROWS`` (memory holds one row group being filled)."""

    files: TableFiles
    folder: str
    schema: pa.Schema
    partitioning: Partitioning | None
    """None: rows are not checked (a rewrite of a whole unpartitioned table)."""
    key: str = WHOLE_TABLE
    written: list[_WrittenFile] = field(default_factory=list)
    _buffer: list[pa.RecordBatch] = field(default_factory=list)
    _buffered: int = 0
    _writer: pq.ParquetWriter | None = None
    _sink: pa.NativeFile | None = None
    _path: str = ""
    _file_rows: int = 0

    def __post_init__(self) -> None:
        partition_columns = self.partitioning.columns if self.partitioning else []
        self.file_schema = pa.schema([f for f in self.schema if f.name not in partition_columns])
        self._expected = (
            self.partitioning.scalar(self.key)
            if self.partitioning is not None and self.partitioning.partitioned
            else None
        )

    def write(self, batch: pa.RecordBatch) -> None:
        if not batch.num_rows:
            return
        self._check_partition(batch)
        data = batch.select(self.file_schema.names)
        if not data.schema.equals(self.file_schema):
            try:
                data = data.cast(self.file_schema)
            except (ValueError, pa.ArrowException) as error:
                raise PartitionWriteError(f"{self.files.uri}: {error_summary(error)}") from error
        self._buffer.append(data)
        self._buffered += data.num_rows
        while self._buffered >= ROW_GROUP_ROWS:
            self._flush(ROW_GROUP_ROWS)

    def close(self) -> list[_WrittenFile]:
        if self._buffered:
            self._flush(self._buffered)
        self._finish()
        return self.written

    def abort(self) -> None:
        if self._writer is not None:
            # The stream may already be broken; the file is deleted anyway.
            with contextlib.suppress(Exception):
                self._writer.close()
            with contextlib.suppress(Exception):
                self._close_sink()
            self.files.delete(self._path)
            self._writer = None
        for written in self.written:
            self.files.delete(written.path)

    def _check_partition(self, batch: pa.RecordBatch) -> None:
        """Every row's partition column holds the partition's value."""
        expected = self._expected
        if expected is None or self.partitioning is None or self.partitioning.column is None:
            return
        column = self.partitioning.column
        index = batch.schema.get_field_index(column)
        if index < 0:
            raise PartitionWriteError(f"{self.files.uri}: rows without the column {column!r}")
        values = batch.column(index)
        if values.type != expected.type:
            try:
                values = values.cast(expected.type)
            except (ValueError, pa.ArrowException) as error:
                raise PartitionWriteError(
                    f"{self.files.uri}: partition column {column!r}: {error_summary(error)}"
                ) from error
        if values.null_count:
            raise PartitionWriteError(
                f"{self.files.uri}: a row with no {column} in the write of partition {self.key}"
            )
        matches = pc.equal(values, expected)
        if not pc.all(matches).as_py():
            other = values.filter(pc.invert(matches))[0].as_py()
            shown = other.isoformat(" ") if isinstance(other, dt.datetime) else other
            raise PartitionWriteError(
                f"{self.files.uri}: a row with {column} {shown} in the write of partition "
                f"{self.key}"
            )

    def _flush(self, rows: int) -> None:
        table = pa.Table.from_batches(self._buffer, self.file_schema)
        group, rest = table.slice(0, rows), table.slice(rows)
        writer = self._writer or self._open()
        writer.write_table(group, row_group_size=rows)
        self._file_rows += rows
        self._buffer = rest.to_batches()
        self._buffered = rest.num_rows
        if self._file_rows >= FILE_ROWS:
            self._finish()

    def _open(self) -> pq.ParquetWriter:
        self._path = f"{self.folder}/part-00000-{uuid.uuid4()}-c000.zstd.parquet".lstrip("/")
        self._sink = self.files.open_output(self._path)
        self._writer = pq.ParquetWriter(
            self._sink,
            self.file_schema,
            compression=COMPRESSION,
            write_page_checksum=True,
            write_statistics=True,
        )
        self._file_rows = 0
        return self._writer

    def _finish(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        self._close_sink()  # the writer leaves a stream it did not open: this completes the upload
        metadata = self._writer.writer.metadata  # type: ignore[attr-defined]
        size = self.files.size(self._path)
        assert size is not None, self._path
        self.written.append(
            _WrittenFile(self._path, size, metadata.num_rows, _stats(metadata, self.file_schema))
        )
        self._writer = None

    def _close_sink(self) -> None:
        if self._sink is not None:
            sink, self._sink = self._sink, None
            sink.close()


def _stats(metadata: pq.FileMetaData, schema: pa.Schema) -> str:
    """Delta file statistics from the Parquet footer: rows, nulls, and min/max of numeric and
    date columns (the types whose Delta statistics format is unambiguous)."""
    nulls: dict[str, int] = {}
    lows: dict[str, Any] = {}
    highs: dict[str, Any] = {}
    for index, column in enumerate(schema):
        counts, values, complete = 0, [], True
        for group in range(metadata.num_row_groups):
            statistics = metadata.row_group(group).column(index).statistics
            if statistics is None or statistics.null_count is None:
                complete = False
                break
            counts += statistics.null_count
            if statistics.has_min_max:
                values.append((statistics.min, statistics.max))
        if not complete:
            continue
        nulls[column.name] = counts
        if values and any(check(column.type) for check in _MIN_MAX_TYPES):
            low, high = min(v[0] for v in values), max(v[1] for v in values)
            if isinstance(low, float) and not (math.isfinite(low) and math.isfinite(high)):
                continue
            lows[column.name] = _json_value(low)
            highs[column.name] = _json_value(high)
    return json.dumps(
        {
            "numRecords": metadata.num_rows,
            "minValues": lows,
            "maxValues": highs,
            "nullCount": nulls,
        }
    )


def _json_value(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.date) else value


def rewrite_table(
    location: DeltaLocation,
    batches: Iterable[pa.RecordBatch],
    schema: pa.Schema,
    *,
    commit_metadata: Mapping[str, str] | None = None,
) -> CommitResult:
    """Replace the whole content of an unpartitioned table (a small one: the catalog) in one
    commit; ``ConcurrentWriteError`` if another writer committed since it was read."""
    table = location.open() if location.exists() else None
    if table is not None:
        _check_schema(location, table, schema)
    files = location.files()
    writer = _PartitionWriter(files, "", schema, None)
    try:
        for batch in batches:
            writer.write(batch)
        written = writer.close()
    except BaseException:
        writer.abort()
        raise
    rows = sum(f.rows for f in written)
    adds = [f.add_action({}) for f in written]
    write_id = uuid.uuid4().hex
    stamp = {**(commit_metadata or {}), WRITE_ID_KEY: write_id}
    removed = len(table.file_uris()) if table is not None else 0
    properties = CommitProperties(
        custom_metadata={**stamp, "operationMetrics": _metrics(adds, removed, rows)},
        app_transactions=[Transaction(f"{APP_ID_PREFIX}*", time.time_ns() // 1000)],
    )
    try:
        if table is None:
            create_table_with_add_actions(
                location.uri,
                DeltaSchema.from_arrow(schema),
                adds,
                mode="error",
                storage_options=location.options,
                commit_properties=properties,
            )
        else:
            table.create_write_transaction(
                _actions(adds),
                mode="overwrite",
                schema=table.schema(),
                commit_properties=properties,
            )
    except (CommitFailedError, DeltaError) as error:
        for add in adds:
            files.delete(add.path)
        if isinstance(error, CommitFailedError) or "already exists" in str(error):
            raise ConcurrentWriteError(
                f"another writer committed to {location.uri} while this run was rewriting it; "
                "nothing was committed - rerun"
            ) from error
        raise
    after = table.version() if table is not None else -1
    return CommitResult(find_commit(files, WRITE_ID_KEY, write_id, after=after), rows, len(adds))


@dataclass(frozen=True)
class Snapshot:
    """One version of a Delta table: every scan of it sees the same rows."""

    location: DeltaLocation
    partitioning: Partitioning
    table: DeltaTable
    dataset: ds.Dataset

    @property
    def version(self) -> int:
        return self.table.version()

    @property
    def schema(self) -> pa.Schema:
        return self.dataset.schema

    def batches(
        self,
        key: str,
        *,
        columns: list[str] | None = None,
        batch_rows: int = DEFAULT_BATCH_ROWS,
    ) -> Iterator[pa.RecordBatch]:
        """Stream the rows of partition ``key`` as record batches, file by file, every page
        checked against its checksum; a file that cannot be read raises
        ``UnreadableDataError`` naming the partition, the file and why."""
        return self._scan(key, self._filter(key), columns, batch_rows)

    def all_batches(
        self, *, columns: list[str] | None = None, batch_rows: int = DEFAULT_BATCH_ROWS
    ) -> Iterator[pa.RecordBatch]:
        """Stream every row of the version (for small unpartitioned tables: the catalog)."""
        return self._scan(None, None, columns, batch_rows)

    def _scan(
        self,
        key: str | None,
        condition: ds.Expression | None,
        columns: list[str] | None,
        batch_rows: int,
    ) -> Iterator[pa.RecordBatch]:
        for fragment in self.dataset.get_fragments(filter=condition):
            try:
                mismatched = self._mismatched_types(fragment, columns)
            except (OSError, pa.ArrowException) as error:
                raise self._unreadable(key, fragment, error, columns) from error
            if mismatched:
                raise UnreadableDataError(key, self._uri(fragment), "; ".join(mismatched))
            scanner = ds.Scanner.from_fragment(
                fragment,
                schema=self.dataset.schema,
                columns=columns,
                filter=condition,
                batch_size=batch_rows,
                batch_readahead=BATCH_READAHEAD,
                fragment_scan_options=SCAN_OPTIONS,
            )
            try:
                yield from scanner.to_batches()
            except (OSError, pa.ArrowException) as error:
                raise self._unreadable(key, fragment, error, columns) from error

    def count(self, key: str) -> int:
        """Rows in partition ``key`` (from the files' footers)."""
        condition = self._filter(key)
        total = 0
        for fragment in self.dataset.get_fragments(filter=condition):
            try:
                scanner = ds.Scanner.from_fragment(
                    fragment, schema=self.dataset.schema, columns=[], filter=condition
                )
                total += scanner.count_rows()
            except (OSError, pa.ArrowException) as error:
                raise self._unreadable(key, fragment, error, None) from error
        return total

    def file_count(self, key: str) -> int:
        """Data files holding partition ``key`` (1 for a compacted partition)."""
        return sum(1 for _ in self.dataset.get_fragments(filter=self._filter(key)))

    def unreadable_files(self, key: str) -> dict[str, str]:
        """Data files (full URIs) of partition ``key`` whose Parquet footer cannot be read,
        each with the reader's error (to name the file to blame when a partition fails)."""
        broken = {}
        for fragment in self.dataset.get_fragments(filter=self._filter(key)):
            try:
                fragment.ensure_complete_metadata()  # type: ignore[attr-defined]
            except (OSError, pa.ArrowException) as error:
                broken[self._uri(fragment)] = error_summary(error)
        return broken

    def partitions(self) -> list[str]:
        """The keys of the partitions that hold data, oldest first (``[WHOLE_TABLE]`` for an
        unpartitioned table with data)."""
        partitioning = self.partitioning
        if partitioning.column is None:
            return [WHOLE_TABLE] if self.table.file_uris() else []
        column = partitioning.column
        keys = {
            partitioning.key_of(values[column])
            for values in self.table.partitions()
            if values.get(column) is not None
        }
        return sorted(keys, key=partitioning.value)

    def _filter(self, key: str) -> ds.Expression | None:
        """The rows of partition ``key`` (None: every row of an unpartitioned table)."""
        _check_key(self.partitioning, key)
        if self.partitioning.column is None:
            return None
        return ds.field(self.partitioning.column) == self.partitioning.scalar(key)

    def _uri(self, fragment: ds.Fragment) -> str:
        return f"{self.location.uri.rstrip('/')}/{fragment.path}"  # type: ignore[attr-defined]

    def _unreadable(
        self,
        key: str | None,
        fragment: ds.Fragment,
        error: BaseException,
        columns: list[str] | None,
    ) -> UnreadableDataError:
        return UnreadableDataError(
            key, self._uri(fragment), self._diagnose(fragment, error, columns)
        )

    def _diagnose(
        self, fragment: ds.Fragment, error: BaseException, columns: list[str] | None
    ) -> str:
        """Why a file failed: changed bytes, a truncated file, or a column stored in a type
        the table does not declare; else the reader's own words."""
        text = error_summary(error)
        if "checksum" in text.lower() or "crc" in text.lower():
            return f"page checksum mismatch: the file's bytes changed after it was written ({text})"
        path: str = fragment.path  # type: ignore[attr-defined]
        expected = self._logged_sizes().get(path)
        try:
            stored = self.location.files().size(path)
        except OSError:
            stored = None
        if stored is None:
            return f"the file is missing ({text})"
        if expected is not None and stored != expected:
            return (
                f"the file is {stored:,} bytes, the Delta log recorded {expected:,} "
                f"(truncated or replaced) ({text})"
            )
        try:
            mismatched = self._mismatched_types(fragment, columns, exact=True)
        except (OSError, pa.ArrowException):
            return text
        return f"{'; '.join(mismatched)} ({text})" if mismatched else text

    def _mismatched_types(
        self, fragment: ds.Fragment, columns: list[str] | None, *, exact: bool = False
    ) -> list[str]:
        """Columns the file stores in another kind of type than the table declares (strings
        in a numeric column, say): a reader would parse them or fail, naming neither."""
        physical = fragment.physical_schema
        declared = self.dataset.schema
        found = []
        for name in columns or declared.names:
            if physical.get_field_index(name) < 0 or declared.get_field_index(name) < 0:
                continue
            stored, wanted = physical.field(name).type, declared.field(name).type
            if stored != wanted and (exact or _kind(stored) != _kind(wanted)):
                found.append(f"column {name!r} is stored as {stored}, the table declares {wanted}")
        return found

    def _logged_sizes(self) -> dict[str, int]:
        actions = pa.table(self.table.get_add_actions(flatten=True))
        paths = actions.column("path").to_pylist()
        sizes = actions.column("size_bytes").to_pylist()
        return {str(p): int(n) for p, n in zip(paths, sizes, strict=True) if n is not None}


def snapshot(location: DeltaLocation, partitioning: Partitioning) -> Snapshot:
    """The table's current version, pinned for consistent repeated reads of its partitions."""
    table = location.open()
    return Snapshot(location, partitioning, table, table.to_pyarrow_dataset())


def read_partition(
    location: DeltaLocation,
    partitioning: Partitioning,
    key: str,
    *,
    columns: list[str] | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> Iterator[pa.RecordBatch]:
    """Stream the rows of partition ``key`` of the current version."""
    return snapshot(location, partitioning).batches(key, columns=columns, batch_rows=batch_rows)


def count_partition(location: DeltaLocation, partitioning: Partitioning, key: str) -> int:
    """Rows in partition ``key`` (0 when the table or partition does not exist)."""
    if not location.exists():
        return 0
    return snapshot(location, partitioning).count(key)


def table_schema(location: DeltaLocation) -> pa.Schema:
    """The Arrow schema of the table's current version."""
    table = location.open()
    return table.to_pyarrow_dataset().schema


def schema_hash(schema: pa.Schema) -> str:
    """A short stable fingerprint of column names and types (metadata ignored)."""
    text = ";".join(f"{f.name}:{f.type}:{f.nullable}" for f in schema)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _kind(data_type: pa.DataType) -> str:
    """A type's family: values of one family convert to another type of it without parsing."""
    if pa.types.is_dictionary(data_type):
        return _kind(data_type.value_type)  # type: ignore[attr-defined]
    for kind, check in (
        ("number", lambda t: pa.types.is_integer(t) or pa.types.is_floating(t)),
        ("number", pa.types.is_decimal),
        ("text", lambda t: pa.types.is_string(t) or pa.types.is_large_string(t)),
        ("text", pa.types.is_string_view),
        ("bytes", lambda t: pa.types.is_binary(t) or pa.types.is_large_binary(t)),
        ("bool", pa.types.is_boolean),
        ("time", pa.types.is_temporal),
    ):
        if check(data_type):
            return kind
    return str(data_type)
