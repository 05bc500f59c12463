"""The Dagster instances the platform ships (``dagster.yaml``), and the run launcher they name.

Production (``instance_config``, committed as ``deploy/dagster.yaml``): PostgreSQL storage, step
logs in Azure Blob Storage (dagster-azure, managed identity), and a run queue that caps
concurrent runs (``scheduling.max-concurrent-jobs``), caps each tenant (``max-concurrent-runs``)
and starts higher ``dagster/priority`` first. Local (``local_instance_config``, the instance of
``make demo``/``make dev``): Dagster's default storage under ``DAGSTER_HOME``.

Both turn on run monitoring with ``WorkerHealthRunLauncher``, so that the daemon marks a run
whose worker died FAILURE within a minute (``RUN_MONITORING``). Dagster's ``DefaultRunLauncher``
cannot do that: it does not implement ``check_run_worker_health``, so with it the monitoring
daemon only enforces start and cancel timeouts, and a run whose worker was killed after it
started stays STARTED forever - unless the code server that launched it is still alive to
notice (it fails runs whose worker process exited). ``WorkerHealthRunLauncher`` launches runs
exactly as ``DefaultRunLauncher`` does and adds the health check.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from dagster import DagsterEventType, DagsterRun, DefaultRunLauncher, Field
from dagster._core.errors import (
    DagsterUserCodeUnreachableError,
    DagsterUserCodeUnreachableTimeoutError,
)
from dagster._core.launcher.base import CheckRunHealthResult, WorkerStatus
from dagster._core.storage.tags import GRPC_INFO_TAG
from dagster._serdes import ConfigurableClassData

if TYPE_CHECKING:
    from batch_inference_platform.lib.tenants import TenantDirectory

POSTGRES_URL_ENV = "DAGSTER_POSTGRES_URL"

RUN_MONITORING: dict[str, Any] = {
    "enabled": True,
    # The daemon checks every STARTED run's worker this often: a worker that dies after its run
    # started is reported within one interval (two, 30 s, when only its code server's absence
    # shows it, see WorkerHealthRunLauncher).
    "poll_interval_seconds": 15,
    # A run that never reaches STARTED fails after this, found at the next poll: under a
    # minute (a launched worker imports the whole platform first: ~15 s on two busy cores).
    "start_timeout_seconds": 40,
    # A run whose termination was asked for is marked CANCELED after this even if its worker
    # never confirms (e.g. it was already dead).
    "cancel_timeout_seconds": 40,
    # DefaultRunLauncher cannot resume a run in a new worker; a dead worker fails the run.
    "max_resume_run_attempts": 0,
}
"""``run_monitoring`` of every instance the platform ships: a dead worker is FAILURE within a
minute (15 s poll, 40 s start and cancel timeouts)."""

LAUNCHER_CLASS = "WorkerHealthRunLauncher"


def run_launcher_config(*, local_workers: bool) -> dict[str, Any]:
    """``run_launcher`` of an instance: ``WorkerHealthRunLauncher`` (see its docstring for what
    ``local_workers`` means)."""
    return {
        "module": __name__,
        "class": LAUNCHER_CLASS,
        "config": {"local_workers": local_workers},
    }


def local_instance_config() -> dict[str, Any]:
    """The ``dagster.yaml`` of the local instance (``make demo``/``make dev``): Dagster's default
    storage under ``DAGSTER_HOME``, every run worker on this machine, run monitoring on."""
    return {
        "run_launcher": run_launcher_config(local_workers=True),
        "run_monitoring": dict(RUN_MONITORING),
        "telemetry": {"enabled": False},
    }


def local_instance_yaml() -> str:
    """``local_instance_config`` as YAML, with a header saying where it came from."""
    header = (
        "# The platform's local Dagster instance (make demo / make dev), written by the CLI\n"
        "# from batch_inference_platform.lib.instance_yaml.local_instance_config.\n"
    )
    return header + yaml.safe_dump(local_instance_config(), sort_keys=False)


def instance_config(
    *,
    max_concurrent_runs: int,
    tenants: TenantDirectory,
    postgres_url_env: str = POSTGRES_URL_ENV,
    azure_compute_logs: bool = True,
) -> dict[str, Any]:
    """The ``dagster.yaml`` content; the database URL stays in the environment. Without
    ``azure_compute_logs`` step logs stay on local disk (Dagster's default)."""
    config: dict[str, Any] = {
        "storage": {"postgres": {"postgres_url": {"env": postgres_url_env}}},
        "run_coordinator": {
            "module": "dagster.core.run_coordinator",
            "class": "QueuedRunCoordinator",
        },
        "concurrency": {
            "runs": {
                "max_concurrent_runs": max_concurrent_runs,
                "tag_concurrency_limits": [
                    # Jobs that must not overlap (the real-time windows) run one at a time.
                    {
                        "key": "bip/singleton",
                        "value": {"applyLimitPerUniqueValue": True},
                        "limit": 1,
                    },
                    *(
                        {"key": "tenant", "value": t.id, "limit": t.max_concurrent_runs}
                        for t in tenants.tenants.values()
                    ),
                ],
            }
        },
        "compute_logs": {
            "module": "dagster_azure.blob.compute_log_manager",
            "class": "AzureBlobComputeLogManager",
            "config": {
                "storage_account": {"env": "DAGSTER_COMPUTE_LOGS_ACCOUNT"},
                "container": {"env": "DAGSTER_COMPUTE_LOGS_CONTAINER"},
                "default_azure_credential": {},
                "prefix": "dagster-compute-logs",
                "upload_interval": 30,
            },
        },
        "run_launcher": run_launcher_config(local_workers=False),
        "run_monitoring": dict(RUN_MONITORING),
        "telemetry": {"enabled": False},
    }
    if not azure_compute_logs:
        del config["compute_logs"]
    return config


def instance_yaml(**kwargs: Any) -> str:
    """``instance_config`` as YAML, with a header saying where it came from."""
    env = kwargs.get("postgres_url_env", POSTGRES_URL_ENV)
    header = (
        "# Generated by `batch-inference dagster-yaml` from application.yml and the tenants "
        "file;\n# regenerate instead of editing. The database URL comes from "
        f"${env}, e.g.\n#   postgresql+psycopg2://user:password@host:5432/dagster\n"
        "# (dagster-postgres speaks psycopg2; SQLAlchemy 2.1 would pick psycopg 3 for a bare "
        "postgresql:// URL).\n"
    )
    return header + yaml.safe_dump(instance_config(**kwargs), sort_keys=False)


# --------------------------------------------------------------------------- the run launcher


class WorkerHealthRunLauncher(DefaultRunLauncher):
    """``DefaultRunLauncher`` (runs are launched on the code server that holds the job) whose
    run workers the run-monitoring daemon can check (``check_run_worker_health``).

    A STARTED run's worker is judged by what the daemon can see from where it runs:

    - Launched on a code server (the ``dagster/grpc_info`` tag): the server is asked whether it
      still runs the run. Yes: RUNNING. No - the server that launched it restarted, or the
      worker died (the server then fails the run itself): NOT_FOUND. No answer for
      ``unreachable_grace_seconds`` (two daemon polls): the server, and the workers it ran, are
      gone: NOT_FOUND.
    - With ``local_workers`` (the local instance: ``make demo``/``make dev`` and their CLI runs
      all execute on this machine), any answer short of "yes" from a code server, and every run
      executed outside one (``execute_in_process``, ``dagster job execute``), is settled by
      the worker process itself: the process that started the run (the pid of its RUN_START
      event) must still exist here, not be a zombie, and have been created before the run
      started (a reused pid is another process). A code server restarted by ``dagster dev``, or
      a proxy code server that reloaded its code, leaves the old workers running: RUNNING.
    - Otherwise (production, workers in another container): a run executed outside a code
      server cannot be judged from here and is left RUNNING.

    Caveat (production): a ``dagster code-server start`` server that reloads its code from the
    UI answers for its new process only, so runs still in progress in the old one look gone.
    Deploy code changes as new images (a restart) rather than with the UI's reload.
    """

    def __init__(
        self,
        inst_data: ConfigurableClassData | None = None,
        local_workers: bool = False,
        unreachable_grace_seconds: float = 10.0,
    ) -> None:
        super().__init__(inst_data=inst_data)
        self.local_workers = local_workers
        self.unreachable_grace_seconds = unreachable_grace_seconds
        self._unreachable_since: dict[str, float] = {}

    @classmethod
    def config_type(cls) -> dict[str, Field]:
        return {
            "local_workers": Field(
                bool,
                is_required=False,
                default_value=False,
                description="Every run worker runs on the machine of the daemon (local use).",
            ),
            "unreachable_grace_seconds": Field(
                float,
                is_required=False,
                default_value=10.0,
                description="A code server silent this long is taken as gone with its runs.",
            ),
        }

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]
    ) -> WorkerHealthRunLauncher:
        return cls(inst_data=inst_data, **config_value)

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        if GRPC_INFO_TAG in run.tags:
            answer = self._ask_code_server(run)
            if answer is not None and (
                answer.status == WorkerStatus.RUNNING or not self.local_workers
            ):
                return answer
        if self.local_workers:
            return self._check_local_worker(run)
        return CheckRunHealthResult(
            WorkerStatus.RUNNING, "executed outside a code server: not checked from here"
        )

    def _ask_code_server(self, run: DagsterRun) -> CheckRunHealthResult | None:
        """What the run's code server says of it; ``None`` with no server to ask, or when it
        does not answer and ``local_workers`` lets the worker process settle it."""
        from dagster._grpc.types import CanCancelExecutionRequest, CanCancelExecutionResult
        from dagster._serdes import deserialize_value

        client = self._get_grpc_client_for_termination(run.run_id)
        if client is None:
            return None
        where = f"code server {client.host or ''}:{client.port or client.socket}"
        try:
            result = deserialize_value(
                client.can_cancel_execution(
                    CanCancelExecutionRequest(run_id=run.run_id), timeout=10
                ),
                CanCancelExecutionResult,
            )
        except DagsterUserCodeUnreachableTimeoutError:
            # It answers, slowly: alive, and with it the runs it started.
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"{where} is slow to answer")
        except DagsterUserCodeUnreachableError:
            first = self._unreachable_since.setdefault(run.run_id, time.monotonic())
            if self.local_workers:
                return None
            silent = time.monotonic() - first
            if silent < self.unreachable_grace_seconds:
                return CheckRunHealthResult(WorkerStatus.RUNNING, f"{where} unreachable")
            del self._unreachable_since[run.run_id]
            return CheckRunHealthResult(
                WorkerStatus.NOT_FOUND,
                f"{where} has not answered for {silent:.0f} s: it is gone, and the run "
                "worker it started with it",
            )
        self._unreachable_since.pop(run.run_id, None)
        if result.can_cancel:
            return CheckRunHealthResult(WorkerStatus.RUNNING)
        return CheckRunHealthResult(
            WorkerStatus.NOT_FOUND, f"{where} has no worker process for the run"
        )

    def _check_local_worker(self, run: DagsterRun) -> CheckRunHealthResult:
        records = self._instance.get_records_for_run(
            run.run_id, of_type=DagsterEventType.RUN_START, limit=1
        ).records
        event = records[0].event_log_entry if records else None
        pid = event.dagster_event.pid if event and event.dagster_event else None
        if event is None or pid is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "no RUN_START event yet")
        state = local_process_state(pid, started_before=event.timestamp)
        if state == "running":
            return CheckRunHealthResult(WorkerStatus.RUNNING)
        return CheckRunHealthResult(
            WorkerStatus.FAILED, f"the run worker process (pid {pid}) on this machine {state}"
        )


_CLOCK_SLACK_SECONDS = 2.0
"""/proc start times are whole boot seconds plus clock ticks: allow for the rounding."""


def local_process_state(pid: int, *, started_before: float) -> str:
    """``"running"`` when process ``pid`` exists on this machine, is not a zombie and was
    created before ``started_before`` (a Unix time); otherwise why not ("has exited", "is a
    zombie", "has exited (pid reused)"). Without /proc only existence is checked."""
    stat = Path(f"/proc/{pid}/stat")
    if sys.platform.startswith("linux") and Path("/proc/stat").exists():
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            return "has exited"
        if fields[0] in ("Z", "X"):
            return "is a zombie (it was killed or exited)"
        ticks = int(fields[19]) / os.sysconf("SC_CLK_TCK")
        created = _boot_time() + ticks
        if created > started_before + _CLOCK_SLACK_SECONDS:
            return "has exited (its pid now belongs to a newer process)"
        return "running"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "has exited"
    except PermissionError:
        return "running"
    return "running"


def _boot_time() -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise RuntimeError("/proc/stat has no btime")
