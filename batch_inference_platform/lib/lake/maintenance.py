"""Lake maintenance: compact a Delta table's small files, then VACUUM what no version needs.

Files pile up in two ways. Every partition replace leaves the replaced files in the table
directory (removed from the log, kept for time travel); and a writer that is killed or loses a
commit conflict leaves the files it wrote but never committed, which no version references at
all. ``maintain`` compacts the table (``optimize.compact``: small files of a partition become
one; the old ones are removed from the log) and then runs a full VACUUM: it deletes files that
are removed from the log and older than the retention, and files no commit references whose
last modification is older than the retention. Live rows are never touched: the current
version references only files VACUUM keeps.

The files and bytes each step removed from storage are measured: VACUUM is asked first what
it would delete (a dry run), the sizes of those files are read from storage, then it deletes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from deltalake import DeltaTable, WriterProperties
from deltalake.exceptions import CommitFailedError
from deltalake.fs import DeltaStorageHandler
from pyarrow.fs import FileType

from batch_inference_platform.lib.lake.tables import ROW_GROUP_ROWS, DeltaLocation

COMPACT_ATTEMPTS = 3
"""A compaction that loses a commit race to a writer of the same table is retried."""


@dataclass(frozen=True)
class TableMaintenance:
    """What maintaining one table did."""

    name: str
    uri: str
    status: str
    """``ok``, ``absent`` (no table there: nothing to do) or ``failed``."""
    files_compacted: int = 0
    """Files compaction rewrote (removed from the log; deleted by a later VACUUM)."""
    files_written: int = 0
    """Files compaction wrote in their place."""
    files_removed: int = 0
    """Files VACUUM deleted from storage."""
    bytes_removed: int = 0
    """Their size."""
    live_files: int = 0
    live_bytes: int = 0
    """Files and bytes of the current version, after maintenance."""
    version: int | None = None
    """The table's version after maintenance."""
    seconds: float = 0.0
    error: str = ""


def maintain(
    name: str,
    location: DeltaLocation,
    *,
    retention_hours: int,
    compact: bool = True,
    clock: Callable[[], float] = time.perf_counter,
) -> TableMaintenance:
    """Compact (``compact``) then VACUUM the table at ``location``, deleting unreferenced
    files older than ``retention_hours``. A missing table is ``absent``; an error is
    ``failed`` with the error (this function does not raise for one table)."""
    started = clock()
    try:
        if not location.exists():
            return TableMaintenance(name, location.uri, "absent")
        compacted = _compact(location) if compact else {}
        files, size = _vacuum(location, retention_hours)
        table = location.open()
        live = _live_files(table)
        return TableMaintenance(
            name,
            location.uri,
            "ok",
            files_compacted=int(compacted.get("numFilesRemoved", 0)),
            files_written=int(compacted.get("numFilesAdded", 0)),
            files_removed=files,
            bytes_removed=size,
            live_files=len(live),
            live_bytes=sum(live.values()),
            version=table.version(),
            seconds=clock() - started,
        )
    except Exception as error:  # one table's failure is reported, not raised
        return TableMaintenance(
            name,
            location.uri,
            "failed",
            seconds=clock() - started,
            error=f"{type(error).__name__}: {error}",
        )


def _compact(location: DeltaLocation) -> dict:
    """One OPTIMIZE commit for the whole table (readers of commit metadata, such as the
    real-time consumer's offsets, look back a bounded number of commits: few is better),
    written in the row groups the platform's readers expect."""
    properties = WriterProperties(max_row_group_size=ROW_GROUP_ROWS, compression="ZSTD")
    for attempt in range(1, COMPACT_ATTEMPTS + 1):
        try:
            return location.open().optimize.compact(writer_properties=properties)
        except CommitFailedError:
            if attempt == COMPACT_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


def _vacuum(location: DeltaLocation, retention_hours: int) -> tuple[int, int]:
    """VACUUM; the number and total size of the files it deleted."""

    def vacuum(dry_run: bool) -> list[str]:
        return location.open().vacuum(
            retention_hours=retention_hours,
            dry_run=dry_run,
            enforce_retention_duration=False,
            full=True,
        )

    # VACUUM also names files the log removed that are already gone (deleted by an earlier
    # VACUUM; the log keeps their tombstones for a while): only files still there count.
    candidates = vacuum(dry_run=True)
    sizes = file_sizes(location, candidates) if candidates else {}
    if not sizes:
        return 0, 0
    deleted = [path for path in vacuum(dry_run=False) if path in sizes]
    return len(deleted), sum(sizes[path] for path in deleted)


def file_sizes(location: DeltaLocation, paths: list[str]) -> dict[str, int]:
    """Sizes of files of the table (paths relative to its root, as VACUUM names them), read
    from its storage with the table's own storage options; missing files are left out."""
    storage = DeltaStorageHandler(location.uri, location.options)
    sizes = {}
    for path, info in zip(paths, storage.get_file_info(paths), strict=True):
        if info.type == FileType.File and info.size is not None:
            sizes[path] = int(info.size)
    return sizes


def _live_files(table: DeltaTable) -> dict[str, int]:
    """Path -> size of every file the current version references."""
    actions = table.get_add_actions(flatten=True)
    paths = actions.column("path").to_pylist()
    sizes = actions.column("size_bytes").to_pylist()
    return {str(p): int(s or 0) for p, s in zip(paths, sizes, strict=True)}


def catalog_table_uris(catalog: DeltaLocation) -> set[str]:
    """Every table the dataset catalog has recorded a version of (e.g. the predictions of
    models served before); empty without a catalog."""
    if not catalog.exists():
        return set()
    dataset = catalog.open().to_pyarrow_dataset()
    uris: set[str] = set()
    for batch in dataset.to_batches(columns=["table_uri"]):
        uris.update(str(uri) for uri in batch.column(0).to_pylist() if uri)
    return uris
