"""Real servers on loopback for the tests: our ASGI app under uvicorn, ``mlflow server`` and
``dagster dev``, each started on a free port and stopped afterwards."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path

import psutil
import uvicorn
from fastapi import FastAPI

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def served(app: FastAPI) -> Iterator[str]:
    """``app`` under a real uvicorn on a free loopback port; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def answers_http(url: str) -> Callable[[], bool]:
    """A readiness probe: ``url`` answers an HTTP GET."""

    def probe() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except OSError:
            return False

    return probe


def accepts_tcp(port: int) -> Callable[[], bool]:
    """A readiness probe: something accepts TCP connections on loopback ``port``."""

    def probe() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return False

    return probe


@contextmanager
def process_serving(
    command: list[str],
    ready: Callable[[], bool],
    *,
    log: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 120,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` (output to ``log``) until ``ready()``; stop its process group
    afterwards. A server that dies or never gets ready fails with the tail of its log."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-4000:]
                raise AssertionError(f"{command[:4]} did not come up:\n{tail}")
            time.sleep(0.2)
        yield process
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    stop_process_tree(process)


def stop_process_tree(
    process: subprocess.Popen[bytes], *, grace: float = 30, linger: float = 10
) -> None:
    """Stop ``process`` (started with ``start_new_session=True``) and everything it started.

    SIGTERM to the leader first, so a supervisor (``dagster dev``, ``mlflow server``) stops its
    children in order; after ``grace`` seconds, or once the leader is gone, SIGTERM to what is
    left of its process group and its descendants, then SIGKILL after ``linger`` seconds. A
    leader that exits does not end its group: ``dagster dev`` could leave a ``dagster api
    grpc`` server behind, re-parented to init and still running an hour later."""
    if process.poll() is None:
        tracked = descendants(process.pid)
        with suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=grace)
    else:
        tracked = []
    for signum in (signal.SIGTERM, signal.SIGKILL):
        left = _alive([*tracked, *group_members(process.pid), *descendants(process.pid)])
        if not left and process.poll() is not None:
            return
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signum)
        for member in left:
            with suppress(psutil.Error):
                member.send_signal(signum)
        psutil.wait_procs(left, timeout=linger)
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=linger)
    left = _alive([*tracked, *group_members(process.pid)])
    if left or process.poll() is None:
        raise AssertionError(f"{process.args!r} left processes behind: {describe(left)}")


def descendants(pid: int) -> list[psutil.Process]:
    """The live descendants of ``pid`` (none once it is gone)."""
    with suppress(psutil.Error):
        return _alive(psutil.Process(pid).children(recursive=True))
    return []


def group_members(pgid: int) -> list[psutil.Process]:
    """The live processes of process group ``pgid``, whoever their parent is now."""
    members = []
    for candidate in psutil.process_iter():
        with suppress(psutil.Error, ProcessLookupError, PermissionError):
            if os.getpgid(candidate.pid) == pgid:
                members.append(candidate)
    return _alive(members)


def _alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    """``processes`` without the dead, the zombies and duplicates."""
    alive: dict[int, psutil.Process] = {}
    for candidate in processes:
        with suppress(psutil.Error):
            if candidate.is_running() and candidate.status() != psutil.STATUS_ZOMBIE:
                alive[candidate.pid] = candidate
    return list(alive.values())


def describe(processes: list[psutil.Process]) -> str:
    """One line per process: pid, age and command line (shortened)."""
    lines = []
    for process in processes:
        with suppress(psutil.Error):
            age = time.time() - process.create_time()
            command = " ".join(process.cmdline())[:200]
            lines.append(f"  pid {process.pid} (running {age:.0f}s): {command}")
    return "\n".join(lines)


@contextmanager
def mlflow_server(root: Path) -> Iterator[str]:
    """A real MLflow tracking server with a SQL backend (webhooks need one) that may deliver
    webhooks to loopback receivers; yields its URL."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--default-artifact-root",
        str(root / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    env = {
        "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
        "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
        "MLFLOW_WEBHOOK_CACHE_TTL": "1",
    }
    url = f"http://127.0.0.1:{port}"
    with process_serving(command, answers_http(url + "/health"), log=root / "mlflow.log", env=env):
        yield url


@contextmanager
def dagster_dev(dagster_home: Path, env: Mapping[str, str]) -> Iterator[str]:
    """``dagster dev`` (webserver and daemon) on the repo's workspace.yaml; yields the
    webserver URL once the GraphQL endpoint answers."""
    dagster_home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "dagster",
        "dev",
        "-w",
        str(REPO / "workspace.yaml"),
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
    ]
    url = f"http://127.0.0.1:{port}"
    with process_serving(
        command,
        answers_http(url + "/server_info"),
        log=dagster_home / "dagster_dev.log",
        env={**env, "DAGSTER_HOME": str(dagster_home)},
        cwd=REPO,
        timeout=180,
    ):
        yield url


POSTGRES_URL = os.environ.get("BIP_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
"""The PostgreSQL server the tests use (started by .ci/services; INFRA.md)."""


@contextmanager
def postgres_database() -> Iterator[str]:
    """A new, empty database on the test PostgreSQL server; yields its SQLAlchemy URL and
    drops it afterwards."""
    import uuid

    import psycopg
    from psycopg import sql

    name = f"bip_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    base, _, _ = POSTGRES_URL.rpartition("/")
    try:
        yield f"{base.replace('postgresql://', 'postgresql+psycopg://', 1)}/{name}"
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@contextmanager
def sail_server(log_dir: Path) -> Iterator[str]:
    """A Sail Spark Connect server (``sail spark server``, INFRA.md); yields its sc:// URL."""
    log_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = [
        str(Path(sys.executable).with_name("sail")),
        "spark",
        "server",
        "--ip",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with process_serving(command, accepts_tcp(port), log=log_dir / "sail.log", timeout=30):
        yield f"sc://127.0.0.1:{port}"


AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
"""Azurite's published development account and key (not a secret)."""


@contextmanager
def azurite(root: Path) -> Iterator[str]:
    """Azurite's Blob service (INFRA.md) on a free port; yields its blob endpoint URL.

    The binary is ``$AZURITE_BLOB`` (set by .ci/run) or ``azurite-blob`` on PATH."""
    import shutil

    binary = os.environ.get("AZURITE_BLOB") or shutil.which("azurite-blob")
    local = REPO / ".ci" / "node" / "node_modules" / ".bin" / "azurite-blob"
    if not binary and local.exists():
        binary = str(local)
    if not binary:
        raise AssertionError("Azurite is not installed: run .ci/run or npm install azurite")
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = [
        binary,
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        str(port),
        "--location",
        str(root),
        "--disableTelemetry",
        "--skipApiVersionCheck",
        "--loose",
    ]
    with process_serving(command, accepts_tcp(port), log=root / "azurite.log", timeout=60):
        yield f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"


SESSION_MARKER = "BIP_TEST_SESSION"
"""Set in the pytest process's environment: every process the suite starts inherits it."""

IN_PROCESS_HELPERS = ("multiprocessing.resource_tracker", "multiprocessing.forkserver", "loky")
"""Children of the pytest process itself that live as long as it does (pools, trackers)."""


def leftover_processes(marker: str) -> list[psutil.Process]:
    """Processes the suite started that still run: the pytest process's descendants and every
    process whose environment carries ``SESSION_MARKER=marker`` (orphans re-parented to init
    included), less the interpreter's own helpers."""
    me = psutil.Process()
    found = {p.pid: p for p in me.children(recursive=True)}
    for candidate in psutil.process_iter():
        if candidate.pid == me.pid or candidate.pid in found:
            continue
        with suppress(psutil.Error):
            if candidate.environ().get(SESSION_MARKER) == marker:
                found[candidate.pid] = candidate
    leftovers = []
    for process in _alive(list(found.values())):
        with suppress(psutil.Error):
            helper = process.ppid() == me.pid and any(
                name in " ".join(process.cmdline()) for name in IN_PROCESS_HELPERS
            )
            if not helper:
                leftovers.append(process)
    return leftovers


def kill_all(processes: list[psutil.Process], timeout: float = 10) -> None:
    """SIGTERM ``processes``, SIGKILL those still alive after ``timeout``."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        for process in processes:
            with suppress(psutil.Error):
                process.send_signal(signum)
        _, processes = psutil.wait_procs(processes, timeout=timeout)
        if not processes:
            return
