"""A real Kafka-protocol broker for the tests: noida-db (shipped in the ``noida-db`` wheel,
INFRA.md) with only its Kafka service, on a free loopback port.

Persistence (noida-db 0.2.3): the broker keeps its data in memory and snapshots it to
``<data dir>/kafka.json`` about once a second and on a graceful stop. ``stop()`` sends SIGTERM,
so everything produced before it is readable after ``start()``; a SIGKILL (``kill()``) loses
what arrived in the last second or so - an acknowledged message is not yet durable.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import noida_db
from confluent_kafka.admin import AdminClient

from batch_inference_platform_tests.servers import free_port

BINARY = Path(noida_db.__file__).parent / "noida-db"


class KafkaBroker:
    """noida-db's Kafka service on ``bootstrap`` with its data in ``data_dir``; restartable on
    the same port and data (``stop()``/``start()``) to simulate an outage."""

    def __init__(self, data_dir: Path, *, startup_timeout: float = 20) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.log = data_dir.with_name(data_dir.name + ".log")
        self.startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the broker (again) and wait until it answers Kafka metadata requests."""
        if self.running:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        command = [str(BINARY), "start", "--only", "kafka", "--kafka-port", str(self.port)]
        with self.log.open("ab") as out:
            self._process = subprocess.Popen(
                [*command, "--data-dir", str(self.data_dir)],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.startup_timeout
        while not self._answers():
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = self.log.read_text(errors="replace")[-3000:]
                raise AssertionError(f"noida-db kafka did not start on {self.bootstrap}:\n{tail}")
            time.sleep(0.05)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                pass
            AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(timeout=2)
        except Exception:
            return False
        return True

    def stop(self) -> None:
        """Stop gracefully (SIGTERM): the broker saves its data first."""
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        """Stop abruptly (SIGKILL): the last second or so of data may be lost."""
        self._signal(signal.SIGKILL)

    def _signal(self, signum: int) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            try:
                os.killpg(process.pid, signum)
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
            except ProcessLookupError:
                pass
        process.wait()

    def __enter__(self) -> KafkaBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
