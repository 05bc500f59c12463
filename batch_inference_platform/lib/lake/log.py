"""Commits read straight from a Delta table's log, each with its true version.

``DeltaTable.history()`` numbers commits by counting down from the version the table object
was loaded at, but lists the commits in storage - including any committed after the load - so
with another writer active its versions can be off (a stale snapshot even yields negative
ones). Here a commit's version is the name of its log file, ``_delta_log/<version>.json``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from batch_inference_platform.lib.lake.files import TableFiles

LOG_DIR = "_delta_log"


def commit_path(version: int) -> str:
    return f"{LOG_DIR}/{version:020d}.json"


def read_commit(files: TableFiles, version: int) -> dict[str, Any] | None:
    """The commit info of ``version`` with ``version`` set (and ``txn``: the app transactions
    it carries), or None if that log file does not exist (not committed yet, or cleaned up)."""
    raw = files.read(commit_path(version))
    if raw is None:
        return None
    info: dict[str, Any] = {}
    txn: dict[str, int] = {}
    for line in raw.decode().splitlines():
        if not line.strip():
            continue
        action = json.loads(line)
        if "commitInfo" in action:
            info = dict(action["commitInfo"])
        elif "txn" in action:
            txn[str(action["txn"]["appId"])] = int(action["txn"]["version"])
    return {**info, "version": version, "txn": txn}


def commits_down_from(files: TableFiles, newest: int, limit: int) -> Iterator[dict[str, Any]]:
    """Commit infos from ``newest`` down, at most ``limit``; stops where the log has been
    cleaned up."""
    for version in range(newest, max(newest - limit, -1), -1):
        commit = read_commit(files, version)
        if commit is None:
            return
        yield commit


def find_commit(files: TableFiles, key: str, value: str, after: int) -> int:
    """The version of the first commit after ``after`` whose info has ``key`` = ``value``
    (our own commit, found by the id we stamped on it; commits after it do not matter)."""
    version = after + 1
    while True:
        commit = read_commit(files, version)
        if commit is None:
            raise RuntimeError(
                f"commit {key}={value} not found in {files.uri} after version {after}"
            )
        if commit.get(key) == value:
            return version
        version += 1
