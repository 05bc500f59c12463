"""The DBFS 2.0 API (``/api/2.0/dbfs/...``) over a local directory standing for the DBFS root."""

from __future__ import annotations

import base64
import binascii
import itertools
import shutil
import threading
from contextlib import suppress
from pathlib import Path, PurePosixPath

from .protocol import (
    ApiError,
    Json,
    Params,
    Route,
    already_exists,
    bool_param,
    does_not_exist,
    int_param,
    invalid_parameter,
    str_param,
)

MAX_BLOCK_BYTES = 1024 * 1024
DEFAULT_READ_BYTES = 512 * 1024


class FakeDbfs:
    """DBFS paths ``/a/b`` and ``dbfs:/a/b`` map to ``root/a/b``; every call holds one lock."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root.resolve()
        self._lock = threading.RLock()
        self._handles: dict[int, tuple[Path, bytearray]] = {}
        self._next_handle = itertools.count(1)

    def routes(self, prefix: str = "/api/2.0/dbfs") -> dict[tuple[str, str], Route]:
        """The HTTP routes of this service, keyed by (method, path)."""
        posts: dict[str, Route] = {
            "put": self.put,
            "mkdirs": self.mkdirs,
            "delete": self.delete,
            "move": self.move,
            "create": self.create,
            "add-block": self.add_block,
            "close": self.close,
        }
        gets: dict[str, Route] = {
            "read": self.read,
            "get-status": self.get_status,
            "list": self.list,
        }
        table = {("POST", f"{prefix}/{name}"): route for name, route in posts.items()}
        table.update({("GET", f"{prefix}/{name}"): route for name, route in gets.items()})
        return table

    # -- paths ---------------------------------------------------------------------------------

    def local_path(self, dbfs_path: str) -> Path:
        """The local file behind a DBFS path (``dbfs:/x``, ``dbfs:///x`` or ``/x``)."""
        path = dbfs_path.removeprefix("dbfs:")
        if path.startswith("///"):
            path = path[2:]
        if not path.startswith("/"):
            raise invalid_parameter(f"Path must be absolute: {dbfs_path}")
        parts = PurePosixPath(path).parts[1:]
        if ".." in parts:
            raise invalid_parameter(f"Path must not contain '..': {dbfs_path}")
        return self.root.joinpath(*parts)

    def dbfs_path(self, local: Path) -> str:
        """The DBFS path (``/x``, as the API reports paths) of a file under the root."""
        relative = local.relative_to(self.root)
        return "/" if relative == Path() else f"/{relative.as_posix()}"

    def _existing(self, params: Params, name: str = "path") -> Path:
        local = self.local_path(str_param(params, name))
        if not local.exists():
            raise does_not_exist(f"No file or directory exists on path {self.dbfs_path(local)}.")
        return local

    def _info(self, local: Path) -> Json:
        stat = local.stat()
        is_dir = local.is_dir()
        return {
            "path": self.dbfs_path(local),
            "is_dir": is_dir,
            "file_size": 0 if is_dir else stat.st_size,
            "modification_time": stat.st_mtime_ns // 1_000_000,
        }

    def _make_parents(self, local: Path) -> None:
        for parent in reversed(local.parents):
            if parent.is_relative_to(self.root) and parent.exists() and not parent.is_dir():
                raise already_exists(
                    f"A file exists at {self.dbfs_path(parent)}, a prefix of the input path."
                )
        local.parent.mkdir(parents=True, exist_ok=True)

    def _check_writable(self, local: Path, overwrite: bool) -> None:
        if local.is_dir() or (local.exists() and not overwrite):
            raise already_exists(
                f"A file or directory already exists at the input path {self.dbfs_path(local)}."
            )

    @staticmethod
    def _decode(data: object, name: str) -> bytes:
        if not isinstance(data, str):
            raise invalid_parameter(f"Missing required field: {name}")
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise invalid_parameter(f"The {name} field is not valid base64.") from None
        if len(raw) > MAX_BLOCK_BYTES:
            raise ApiError(400, "MAX_BLOCK_SIZE_EXCEEDED", f"The {name} exceeds the limit of 1 MB.")
        return raw

    # -- endpoints -----------------------------------------------------------------------------

    def get_status(self, params: Params) -> Json:
        """GET get-status: the FileInfo of a file or directory."""
        with self._lock:
            return self._info(self._existing(params))

    def list(self, params: Params) -> Json:
        """GET list: a directory's entries, or the file itself (empty directory: no ``files``)."""
        with self._lock:
            local = self._existing(params)
            entries = sorted(local.iterdir()) if local.is_dir() else [local]
            files = []
            for entry in entries:
                with suppress(FileNotFoundError):  # removed by a running job meanwhile
                    files.append(self._info(entry))
            return {"files": files} if files else {}

    def mkdirs(self, params: Params) -> Json:
        """POST mkdirs: create a directory and its parents."""
        with self._lock:
            local = self.local_path(str_param(params, "path"))
            if local.exists() and not local.is_dir():
                raise already_exists(f"A file exists at the input path {self.dbfs_path(local)}.")
            self._make_parents(local)
            local.mkdir(exist_ok=True)
            return {}

    def put(self, params: Params) -> Json:
        """POST put: write base64 ``contents`` (up to 1 MB), creating parent directories."""
        with self._lock:
            local = self.local_path(str_param(params, "path"))
            data = self._decode(params.get("contents", ""), "contents")
            self._check_writable(local, bool_param(params, "overwrite"))
            self._make_parents(local)
            local.write_bytes(data)
            return {}

    def read(self, params: Params) -> Json:
        """GET read: ``length`` bytes (default 0.5 MB, at most 1 MB) from ``offset``, base64."""
        with self._lock:
            local = self._existing(params)
            offset = int_param(params, "offset", 0)
            length = int_param(params, "length", 0) or DEFAULT_READ_BYTES
            if local.is_dir():
                raise invalid_parameter(f"The path {self.dbfs_path(local)} is a directory.")
            if offset < 0 or length < 0:
                raise invalid_parameter("offset and length must not be negative.")
            if length > MAX_BLOCK_BYTES:
                raise ApiError(400, "MAX_READ_SIZE_EXCEEDED", "Cannot read more than 1 MB.")
            with local.open("rb") as handle:
                handle.seek(offset)
                data = handle.read(length)
            return {"bytes_read": len(data), "data": base64.b64encode(data).decode("ascii")}

    def delete(self, params: Params) -> Json:
        """POST delete: a file, an empty directory, or (``recursive``) a tree; absent is fine."""
        with self._lock:
            local = self.local_path(str_param(params, "path"))
            if local == self.root:
                raise invalid_parameter("Cannot delete the DBFS root.")
            if local.is_dir():
                if any(local.iterdir()) and not bool_param(params, "recursive"):
                    raise ApiError(
                        400,
                        "IO_ERROR",
                        f"Path {self.dbfs_path(local)} is a non-empty directory; "
                        "set recursive to delete it.",
                    )
                shutil.rmtree(local)
            elif local.exists():
                local.unlink()
            return {}

    def move(self, params: Params) -> Json:
        """POST move: rename a file or directory tree within DBFS."""
        with self._lock:
            source = self._existing(params, "source_path")
            target = self.local_path(str_param(params, "destination_path"))
            if target.exists():
                raise already_exists(
                    f"A file or directory already exists at {self.dbfs_path(target)}."
                )
            self._make_parents(target)
            source.rename(target)
            return {}

    def create(self, params: Params) -> Json:
        """POST create: open a write stream; the file appears at ``close``."""
        with self._lock:
            local = self.local_path(str_param(params, "path"))
            self._check_writable(local, bool_param(params, "overwrite"))
            handle = next(self._next_handle)
            self._handles[handle] = (local, bytearray())
            return {"handle": handle}

    def add_block(self, params: Params) -> Json:
        """POST add-block: append base64 ``data`` (up to 1 MB) to an open stream."""
        with self._lock:
            _, buffer = self._handle(params)
            buffer += self._decode(params.get("data"), "data")
            return {}

    def close(self, params: Params) -> Json:
        """POST close: write the stream's bytes to its file and forget the handle."""
        with self._lock:
            local, buffer = self._handle(params)
            del self._handles[int_param(params, "handle")]
            self._make_parents(local)
            local.write_bytes(bytes(buffer))
            return {}

    def _handle(self, params: Params) -> tuple[Path, bytearray]:
        handle = int_param(params, "handle")
        if handle not in self._handles:
            raise does_not_exist(f"Handle {handle} does not exist.")
        return self._handles[handle]
