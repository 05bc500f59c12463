"""A task's driver process: its own process group, stdout/stderr teed into log files."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Sequence
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import IO


class DriverProcess:
    """``argv`` started in a new session; each output chunk is appended to every sink file."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: dict[str, str],
        cwd: Path,
        stdout: Sequence[Path],
        stderr: Sequence[Path],
    ) -> None:
        self._process = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        assert self._process.stdout is not None and self._process.stderr is not None
        self._pumps = [
            _start_pump(self._process.stdout, stdout),
            _start_pump(self._process.stderr, stderr),
        ]

    @property
    def pid(self) -> int:
        """The driver's pid, also its process group id."""
        return self._process.pid

    def poll(self) -> int | None:
        """The exit code, or None while the driver runs."""
        return self._process.poll()

    def signal_group(self, signum: signal.Signals) -> None:
        """Send ``signum`` to the driver's whole process group (no-op once it is gone)."""
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signum)

    def finish(self, timeout: float = 10) -> int:
        """After the driver exited: kill what is left of its group (the cluster goes away),
        drain the log pumps and return the exit code."""
        code = self._process.wait()
        self.signal_group(signal.SIGKILL)
        for pump in self._pumps:
            pump.join(timeout)
        return code


def _start_pump(source: IO[bytes], sinks: Sequence[Path]) -> threading.Thread:
    thread = threading.Thread(target=_pump, args=(source, sinks), daemon=True)
    thread.start()
    return thread


def _pump(source: IO[bytes], sinks: Sequence[Path]) -> None:
    with ExitStack() as stack:
        stack.enter_context(source)
        files = [stack.enter_context(path.open("ab")) for path in sinks]
        reader = getattr(source, "read1", source.read)
        while chunk := reader(64 * 1024):
            for file in files:
                file.write(chunk)
                file.flush()
