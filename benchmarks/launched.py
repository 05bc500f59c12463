"""The ``launched`` way: one partition's score job launched through GraphQL on a real instance.

``dagster dev`` (webserver, daemon, code server) runs on a free loopback port over a temporary
``DAGSTER_HOME`` holding the platform's local ``dagster.yaml`` (``lib/instance_yaml.py``: its
run launcher, run queue and run monitoring), its code location named as in ``workspace.yaml``
and pointed at the benchmark's deployments folder. The job is submitted as the UI submits it
(a ``launchRun`` mutation), its status polled over GraphQL until it ends, and its queued-to-end
seconds and phases read from the run's stats: what a person who presses "Materialize" waits.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import yaml
from dagster_graphql import DagsterGraphQLClient

from batch_inference_platform.lib.instance_yaml import local_instance_yaml

LOCATION = "batch_inference_platform"
"""The code location's name, as ``workspace.yaml`` names it."""
MODULE = "batch_inference_platform.definitions"
REPOSITORY = "__repository__"
"""The repository name Dagster gives a module's ``Definitions``."""
READY_TIMEOUT = 240.0
RUN_TIMEOUT = 900.0
POLL = 0.2
FINISHED = ("SUCCESS", "FAILURE", "CANCELED")

_READY = """{
  workspaceOrError { __typename ... on Workspace { locationEntries {
    name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } }
  instance { daemonHealth { allDaemonStatuses { daemonType healthy } } }
}"""
_STATS = """query RunStats($runId: ID!) {
  runOrError(runId: $runId) { __typename ... on Run {
    status creationTime startTime endTime
    stats { __typename ... on RunStatsSnapshot { enqueuedTime launchTime startTime endTime } }
    stepStats { stepKey status startTime endTime }
  } }
}"""


@dataclass(frozen=True)
class Phases:
    """Where a launched run's seconds went, from its stats (Unix times)."""

    created: float
    enqueued: float | None
    launched: float | None
    started: float
    ended: float
    steps: list[dict[str, Any]]
    """``stepKey``, ``startTime``, ``endTime`` of each step, in start order."""

    @property
    def total(self) -> float:
        """Queued (created) to finished: what the person who launched it waits."""
        return self.ended - self.created

    def breakdown(self) -> dict[str, float]:
        """Seconds per phase: queue (created -> launched by the daemon), worker start
        (launched -> RUN_START: a process and the definitions load), step start (the gaps
        before and between steps: a step's process start and resource set-up), steps (their
        own time) and the end (last step -> run end)."""
        launched = self.launched or self.enqueued or self.created
        phases = {
            "queue": launched - self.created,
            "worker_start": self.started - launched,
        }
        gaps: list[float] = []
        previous = self.started
        for step in self.steps:
            gaps.append(max(step["startTime"] - previous, 0.0))
            previous = max(previous, step["endTime"])
        phases["step_starts"] = sum(gaps)
        phases["max_step_start"] = max(gaps, default=0.0)
        phases["steps"] = sum(s["endTime"] - s["startTime"] for s in self.steps)
        phases["run_end"] = self.ended - previous
        return {k: round(v, 2) for k, v in phases.items()}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_home(home: Path, working_directory: Path) -> Path:
    """A ``DAGSTER_HOME`` with the platform's local ``dagster.yaml`` and a workspace file that
    loads the platform's module as ``workspace.yaml`` does; returns the workspace file."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(local_instance_yaml())
    workspace = home / "workspace.yaml"
    location = {
        "module_name": MODULE,
        "working_directory": str(working_directory),
        "location_name": LOCATION,
    }
    workspace.write_text(yaml.safe_dump({"load_from": [{"python_module": location}]}))
    return workspace


@dataclass(frozen=True)
class Instance:
    """A running ``dagster dev``: Dagster's GraphQL client and raw queries to its endpoint."""

    client: DagsterGraphQLClient
    url: str

    def query(self, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        response = requests.post(
            self.url, json={"query": query, "variables": dict(variables or {})}, timeout=60
        )
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise RuntimeError(f"GraphQL errors: {body['errors']}")
        return body["data"]


@contextmanager
def running_instance(
    env: Mapping[str, str], working_directory: Path, log: Path
) -> Iterator[Instance]:
    """``dagster dev`` on a free port over a new temporary ``DAGSTER_HOME`` with ``env``; the
    client once the code location is loaded and the daemon is healthy. Everything it started
    is stopped on exit (its own process group)."""
    with tempfile.TemporaryDirectory(prefix="bench-dagster-home-") as home:
        workspace = write_home(Path(home), working_directory)
        port = free_port()
        command = [
            str(Path(sys.executable).parent / "dagster"),
            *("dev", "-w", str(workspace), "-h", "127.0.0.1", "-p", str(port)),
        ]
        with log.open("w") as output:
            process = subprocess.Popen(
                command,
                cwd=working_directory,
                env={**os.environ, **env, "DAGSTER_HOME": home},
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            client = DagsterGraphQLClient("127.0.0.1", port_number=port, timeout=60)
            instance = Instance(client, f"http://127.0.0.1:{port}/graphql")
            _wait_ready(instance, process, log)
            yield instance
        finally:
            _stop(process)


def _wait_ready(instance: Instance, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text()[-3000:]
            raise RuntimeError(f"dagster dev exited {process.returncode}:\n{tail}")
        try:
            data = instance.query(_READY)
        except requests.RequestException:  # not listening yet
            time.sleep(0.5)
            continue
        entries = data["workspaceOrError"].get("locationEntries", [])
        entry = next((e for e in entries if e["name"] == LOCATION), None)
        if entry and entry["locationOrLoadError"]:
            if entry["locationOrLoadError"]["__typename"] == "PythonError":
                raise RuntimeError(f"{LOCATION} failed to load: {entry['locationOrLoadError']}")
            daemons = data["instance"]["daemonHealth"]["allDaemonStatuses"]
            if any(d["daemonType"] == "QUEUED_RUN_COORDINATOR" and d["healthy"] for d in daemons):
                return
        time.sleep(0.5)
    raise TimeoutError(f"dagster dev not ready in {READY_TIMEOUT:.0f}s:\n{log.read_text()[-3000:]}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process group ``dagster dev`` leads (it stops its webserver, daemon and
    code server), SIGKILL to what is left after 30 s."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout=30)
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def launch_partition(instance: Instance, job: str, partition: str) -> str:
    """Submit ``job`` for ``partition`` as the UI's launch button does; the run id."""
    return instance.client.submit_job_execution(
        job,
        repository_location_name=LOCATION,
        repository_name=REPOSITORY,
        tags={"dagster/partition": partition},
    )


def wait_for_run(instance: Instance, run_id: str) -> tuple[str, Phases]:
    """Poll the run's status until it finishes; its final status and phases."""
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        status = instance.client.get_run_status(run_id).value
        if status in FINISHED:
            return status, run_phases(instance, run_id)
        time.sleep(POLL)
    raise TimeoutError(f"run {run_id} did not finish in {RUN_TIMEOUT:.0f}s")


def run_phases(instance: Instance, run_id: str) -> Phases:
    """The run's phases from its stats and step stats."""
    run = instance.query(_STATS, {"runId": run_id})["runOrError"]
    stats = run["stats"]
    steps = sorted(
        (s for s in run["stepStats"] if s["startTime"] and s["endTime"]),
        key=lambda s: s["startTime"],
    )
    return Phases(
        created=run["creationTime"],
        enqueued=stats.get("enqueuedTime"),
        launched=stats.get("launchTime"),
        started=run["startTime"],
        ended=run["endTime"],
        steps=[{k: s[k] for k in ("stepKey", "startTime", "endTime")} for s in steps],
    )
