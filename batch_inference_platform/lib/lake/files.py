"""Files under a Delta table's root, on local disk or object storage (Azure), by relative path.

Local tables go through pyarrow's native filesystem; any other URI through delta-rs's own
object store (``deltalake.fs.DeltaStorageHandler``), with the same storage options (and so the
same credentials) that the table is read and committed with.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import pyarrow as pa
import pyarrow.fs as pafs
from deltalake.fs import DeltaStorageHandler


def is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


class TableFiles:
    """Read, write and delete files of one table by path relative to its root."""

    def __init__(self, uri: str, storage_options: Mapping[str, str] | None = None) -> None:
        self.uri = uri.rstrip("/")
        self._local = is_local(uri)
        if self._local:
            root = uri.removeprefix("file://")
            self._root = str(Path(root).absolute())
            self._fs: pafs.FileSystem = pafs.LocalFileSystem()
        else:
            self._handler = _Handler(self.uri, dict(storage_options or {}))
            self._fs = pafs.PyFileSystem(cast(pafs.FileSystemHandler, self._handler))

    def full(self, path: str) -> str:
        """The URI of ``path`` (what error messages name)."""
        return f"{self.uri}/{path}"

    def _path(self, path: str) -> str:
        return f"{self._root}/{path}" if self._local else path

    def open_output(self, path: str) -> pa.NativeFile:
        """A new file at ``path`` (parent folders created), written as a stream."""
        if self._local:
            Path(self._path(path)).parent.mkdir(parents=True, exist_ok=True)
            return self._fs.open_output_stream(self._path(path))
        return self._handler.open_output_stream(path)

    def read(self, path: str) -> bytes | None:
        """The bytes of ``path``, or None if there is no such file."""
        try:
            with self._fs.open_input_file(self._path(path)) as stream:
                return stream.read()
        except FileNotFoundError:
            return None
        except OSError as error:
            if "not found" in str(error).lower() or "no such file" in str(error).lower():
                return None
            raise

    def size(self, path: str) -> int | None:
        """The stored size of ``path`` in bytes, or None if it does not exist."""
        (info,) = self._fs.get_file_info([self._path(path)])
        return None if info.type == pafs.FileType.NotFound else info.size

    def delete(self, path: str) -> None:
        """Remove ``path`` if it exists (best effort: an orphan file is harmless)."""
        with contextlib.suppress(OSError):
            self._fs.delete_file(self._path(path))


class _Handler(DeltaStorageHandler):
    """delta-rs's object store as a pyarrow filesystem whose output streams accept what
    pyarrow's writers hand them (``pa.Buffer``; delta-rs's stream takes only ``bytes``)."""

    def open_output_stream(self, path: str, metadata: dict[str, str] | None = None) -> Any:
        raw = self._handler.open_output_stream(path, metadata)
        return pa.PythonFile(_BytesSink(raw), mode="w")


class _BytesSink(io.RawIOBase):
    """A writable file object over delta-rs's ``ObjectOutputStream``."""

    def __init__(self, raw: Any) -> None:
        super().__init__()
        self._raw = raw

    def write(self, data: Any) -> int:
        self._raw.write(bytes(data))
        return len(data)

    def flush(self) -> None:
        if not self.closed:
            self._raw.flush()

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()

    def tell(self) -> int:
        return self._raw.tell()

    def writable(self) -> bool:
        return True
