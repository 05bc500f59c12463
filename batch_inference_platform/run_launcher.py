"""The run launcher every Dagster instance the platform ships names (``lib/instance_yaml.py``
writes their ``dagster.yaml``): ``DefaultRunLauncher`` plus a run-worker health check, so that
the run-monitoring daemon marks a run whose worker died FAILURE within a minute.

Dagster's ``DefaultRunLauncher`` does not implement ``check_run_worker_health``: with it the
monitoring daemon only enforces start and cancel timeouts, and a run whose worker was killed
after it started stays STARTED forever - unless the code server that launched it is still alive
to notice. The health-check types (``CheckRunHealthResult``, ``WorkerStatus``) and the code
server client exist only in Dagster's internal modules, which is why this lives outside ``lib``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dagster import DagsterEventType, DagsterRun, DefaultRunLauncher, Field
from dagster._core.errors import (
    DagsterUserCodeUnreachableError,
    DagsterUserCodeUnreachableTimeoutError,
)
from dagster._core.launcher.base import CheckRunHealthResult, WorkerStatus
from dagster._core.storage.tags import GRPC_INFO_TAG
from dagster._serdes import ConfigurableClassData


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
