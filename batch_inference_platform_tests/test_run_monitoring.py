"""A run whose worker is killed (SIGKILL) is marked FAILURE by the run-monitoring daemon
within a minute, on the instances the platform ships (``lib/instance_yaml.py``):

- the local instance (``make demo``/``make dev``): the run executes in a worker process of
  its own (as ``make demo`` runs jobs), which is killed mid-run;
- the production instance (PostgreSQL, run queue): the daemon launches the run on a code
  server (``dagster api grpc``); the code server and its run worker are killed together, as
  when their container dies, and either stay gone or come back as a new process.

Real processes throughout: ``dagster-daemon run`` and the workers are subprocesses; every
wait polls with a deadline, and every process the test started (and their children) is gone
at the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TypeVar

import dagster as dg
import pytest
import yaml
from dagster._core.run_coordinator.queued_run_coordinator import QueuedRunCoordinator

from batch_inference_platform.lib.instance_yaml import (
    LOCAL_DEQUEUE_SECONDS,
    RUN_MONITORING,
    instance_yaml,
    local_instance_yaml,
)
from batch_inference_platform.lib.tenants import TenantDirectory

from .servers import accepts_tcp, free_port, postgres_database

DETECTION_LIMIT_SECONDS = 60
T = TypeVar("T")

JOBS = '''
"""A job that takes its time: its op writes the run id to $MARKER, then sleeps."""
import os
import sys
import time

import dagster as dg


@dg.op
def wait_a_while(context: dg.OpExecutionContext) -> None:
    with open(os.environ["MARKER"], "w") as marker:
        marker.write(context.run_id)
    time.sleep(600)


@dg.job
def sleepy() -> None:
    wait_a_while()


defs = dg.Definitions(jobs=[sleepy])

if __name__ == "__main__":  # a run worker of its own, as `make demo` runs jobs
    with dg.DagsterInstance.get() as instance:
        sleepy.execute_in_process(instance=instance)
'''


# --------------------------------------------------------------------------- processes


def _children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        kids = [child for child, ppid in parents.items() if ppid == parent]
        found += kids
        frontier += kids
    return found


def _describe(pid: int) -> str:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        state = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return f"{pid}: gone"
    return f"{pid}: {command[:200]} [{state[:80]}]"


def _kill(pids: list[int]) -> None:
    for pid in pids:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    """``pid`` runs: not gone, not a zombie, and still has its memory (a killed process
    gives it up first, then may take a moment on a busy machine to finish exiting)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return state not in ("Z", "X") and bool(command)


class Processes:
    """The processes a test starts: each in a session of its own, logged to a file; at the
    end each is killed with all its descendants, and the test fails if any survives."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.started: list[subprocess.Popen[bytes]] = []
        self.pids: set[int] = set()

    def start(self, name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen:
        with (self.logs / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                command,
                env={**os.environ, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started.append(process)
        return process

    def kill_tree(self, process: subprocess.Popen) -> None:
        """SIGKILL ``process`` and its descendants at once, and reap it."""
        pids = [process.pid, *_children(process.pid)]
        self.pids.update(pids)
        _kill(pids)
        process.wait(timeout=30)

    def stop_all(self) -> None:
        """SIGTERM each process group still running, then SIGKILL whatever of the processes
        and their descendants is left; fail if anything survives."""
        running = [p for p in self.started if p.poll() is None]
        for process in running:
            self.pids.update([process.pid, *_children(process.pid)])
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in running:
            with suppress(subprocess.TimeoutExpired):
                process.wait(timeout=20)
        _kill([pid for pid in self.pids if _alive(pid)])
        for process in running:
            process.wait(timeout=30)
        wait_for(
            lambda: not any(_alive(pid) for pid in self.pids) or None,
            timeout=30,
            what="",
            allow_timeout=True,
        )
        survivors = [pid for pid in self.pids if _alive(pid)]
        assert not survivors, f"processes left behind: {[_describe(pid) for pid in survivors]}"

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]


def wait_for(
    probe: Callable[[], T | None], *, timeout: float, what: str, allow_timeout: bool = False
) -> T | None:
    """Poll ``probe`` until it returns something, at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    if value is None and not allow_timeout:
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
    return value


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    started = Processes(tmp_path)
    try:
        yield started
    finally:
        started.stop_all()


@contextmanager
def dagster_home(tmp_path: Path, instance_yaml_text: str) -> Iterator[tuple[Path, Path]]:
    """A DAGSTER_HOME with ``instance_yaml_text`` and the sleepy job file."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(instance_yaml_text)
    jobs = tmp_path / "sleepy_jobs.py"
    jobs.write_text(JOBS)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.get_runs(limit=1)  # create the storage before processes race to create it
    yield home, jobs


def start_daemon(
    processes: Processes, home: Path, workspace: list[str], env: dict[str, str]
) -> None:
    """``dagster-daemon run`` on ``workspace``; returns once its monitoring daemon beats."""
    daemon = [str(Path(sys.executable).parent / "dagster-daemon"), "run", *workspace]
    processes.start("daemon", daemon, {**env, "DAGSTER_HOME": str(home)})
    with dg.DagsterInstance.from_config(str(home)) as instance:
        wait_for(
            lambda: instance.get_daemon_heartbeats().get("MONITORING"),
            timeout=120,
            what=f"the monitoring daemon's heartbeat\n{processes.log('daemon')}",
        )


def await_failure(
    instance: dg.DagsterInstance, run_id: str, killed_at: float, processes: Processes
) -> str:
    """Wait (at most the detection limit) for the run to be FAILURE; its failure message."""

    def failed() -> dg.DagsterRun | None:
        run = instance.get_run_by_id(run_id)
        assert run is not None
        assert run.status in (dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.FAILURE), run
        return run if run.status == dg.DagsterRunStatus.FAILURE else None

    remaining = killed_at + DETECTION_LIMIT_SECONDS - time.monotonic()
    wait_for(
        failed,
        timeout=remaining,
        what=f"run {run_id} to be FAILURE after its worker was killed\n{processes.log('daemon')}",
    )
    print(f"run {run_id} FAILURE {time.monotonic() - killed_at:.1f} s after the kill")
    records = instance.get_records_for_run(
        run_id, of_type={dg.DagsterEventType.RUN_FAILURE, dg.DagsterEventType.ENGINE_EVENT}
    ).records
    return "\n".join(r.event_log_entry.message or "" for r in records)


# --------------------------------------------------------------------------- tests


def test_the_shipped_instances_monitor_runs_within_a_minute() -> None:
    """Both instance configurations turn monitoring on with a launcher that checks workers,
    and their poll and timeouts add up to under a minute."""
    local = yaml.safe_load(local_instance_yaml())
    production = yaml.safe_load(instance_yaml(max_concurrent_runs=5, tenants=TenantDirectory([])))
    for config in (local, production):
        assert config["run_monitoring"] == RUN_MONITORING
        assert config["run_launcher"]["class"] == "WorkerHealthRunLauncher"
    assert local["run_launcher"]["config"] == {"local_workers": True}
    assert production["run_launcher"]["config"] == {"local_workers": False}
    assert RUN_MONITORING["enabled"] and RUN_MONITORING["max_resume_run_attempts"] == 0
    poll = RUN_MONITORING["poll_interval_seconds"]
    assert 2 * poll < DETECTION_LIMIT_SECONDS  # code-server absence takes two polls
    assert RUN_MONITORING["start_timeout_seconds"] + poll <= DETECTION_LIMIT_SECONDS
    assert RUN_MONITORING["cancel_timeout_seconds"] + poll <= DETECTION_LIMIT_SECONDS


def test_the_local_instance_launches_queued_runs_within_a_second(tmp_path: Path) -> None:
    """A run launched from the UI waits at most LOCAL_DEQUEUE_SECONDS in the local queue
    (Dagster's default poll is 5 s), with the worker-checking launcher."""
    (tmp_path / "dagster.yaml").write_text(local_instance_yaml())
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        coordinator = instance.run_coordinator
        assert isinstance(coordinator, QueuedRunCoordinator)
        assert coordinator.dequeue_interval_seconds == LOCAL_DEQUEUE_SECONDS == 1
        assert type(instance.run_launcher).__name__ == "WorkerHealthRunLauncher"


def test_a_killed_local_worker_fails_its_run(tmp_path: Path, processes: Processes) -> None:
    marker = tmp_path / "run_id"
    env = {"MARKER": str(marker)}
    with dagster_home(tmp_path, local_instance_yaml()) as (home, jobs):
        start_daemon(processes, home, ["-f", str(jobs)], env)
        worker = processes.start(
            "worker", [sys.executable, str(jobs)], {**env, "DAGSTER_HOME": str(home)}
        )
        run_id = wait_for(
            lambda: marker.read_text() or None if marker.exists() else None,
            timeout=120,
            what=f"the run to start\n{processes.log('worker')}",
        )
        assert run_id is not None
        with dg.DagsterInstance.from_config(str(home)) as instance:
            run = instance.get_run_by_id(run_id)
            assert run is not None and run.status == dg.DagsterRunStatus.STARTED
            health = instance.run_launcher.check_run_worker_health(run)
            assert health.status.value == "RUNNING", health

            processes.kill_tree(worker)
            killed_at = time.monotonic()
            message = await_failure(instance, run_id, killed_at, processes)
    assert f"pid {worker.pid}" in message, message


@pytest.mark.parametrize("code_server_after_kill", ["gone", "restarted"])
def test_a_killed_code_server_fails_the_runs_it_launched(
    tmp_path: Path,
    processes: Processes,
    monkeypatch: pytest.MonkeyPatch,
    code_server_after_kill: str,
) -> None:
    marker, port = tmp_path / "run_id", free_port()
    workspace = tmp_path / "workspace.yaml"
    location = {"host": "127.0.0.1", "port": port, "location_name": "sleepy"}
    workspace.write_text(yaml.safe_dump({"load_from": [{"grpc_server": location}]}))
    production = instance_yaml(
        max_concurrent_runs=2, tenants=TenantDirectory([]), azure_compute_logs=False
    )
    with postgres_database() as url:
        postgres_url = url.replace("+psycopg://", "+psycopg2://")
        monkeypatch.setenv("DAGSTER_POSTGRES_URL", postgres_url)
        with dagster_home(tmp_path, production) as (home, jobs):
            env = {
                "MARKER": str(marker),
                "DAGSTER_HOME": str(home),
                "DAGSTER_POSTGRES_URL": postgres_url,
            }
            server_command = [sys.executable, "-m", "dagster", "api", "grpc"]
            server_command += ["-h", "127.0.0.1", "-p", str(port), "-f", str(jobs)]
            server = processes.start("code_server", server_command, env)
            wait_for(
                lambda: accepts_tcp(port)() or None,
                timeout=120,
                what=f"the code server\n{processes.log('code_server')}",
            )
            start_daemon(processes, home, ["-w", str(workspace)], env)
            launch = [sys.executable, "-m", "dagster", "job", "launch", "-w", str(workspace)]
            subprocess.run([*launch, "-j", "sleepy"], env={**os.environ, **env}, check=True)
            run_id = wait_for(
                lambda: marker.read_text() or None if marker.exists() else None,
                timeout=120,
                what=f"the launched run to start\n{processes.log('daemon')}",
            )
            assert run_id is not None
            with dg.DagsterInstance.from_config(str(home)) as instance:
                run = instance.get_run_by_id(run_id)
                assert run is not None and run.status == dg.DagsterRunStatus.STARTED
                health = instance.run_launcher.check_run_worker_health(run)
                assert health.status.value == "RUNNING", health

                processes.kill_tree(server)  # the code server and its run worker, as a container
                killed_at = time.monotonic()
                if code_server_after_kill == "restarted":
                    processes.start("code_server_again", server_command, env)
                message = await_failure(instance, run_id, killed_at, processes)
    expected = "has no worker process" if code_server_after_kill == "restarted" else "gone"
    assert expected in message, message
