"""The lifecycle of one submitted run: cluster start (or its quota failure), the driver process,
cancellation and timeouts, then cluster teardown."""

from __future__ import annotations

import random
import signal
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .clusters import ClustersService, FakeCluster, azure_quota_error
from .dbfs import FakeDbfs
from .environment import LocalIndex
from .process import DriverProcess
from .protocol import now_ms
from .runs import (
    CANCELED,
    FAILED,
    FAKE_BROKEN,
    LAUNCH_FAILED,
    SUCCEEDED,
    TIMED_OUT,
    FakeRun,
    Outcome,
)
from .tasks import Launch, TaskSetupError, build_launch, task_environment

JOB_FINISHED = {"code": "JOB_FINISHED", "type": "SUCCESS"}
USER_REQUEST = {"code": "USER_REQUEST", "type": "SUCCESS"}


@dataclass(frozen=True)
class JobsConfig:
    """What the fake workspace's job clusters look like and how fast they move."""

    workdir: Path
    spark_remote: str | None
    max_workers_quota: int
    region: str
    cluster_start_seconds: float
    cluster_stop_seconds: float
    cancel_grace_seconds: float


class RunBoard:
    """The condition every run state change happens under, and the shutdown flag."""

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.stopping = False

    def update(self, run: FakeRun, **fields: Any) -> None:
        """Set ``fields`` on ``run`` and wake whoever waits for a change."""
        with self.changed:
            for name, value in fields.items():
                setattr(run, name, value)
            self.changed.notify_all()

    def finish(self, run: FakeRun, outcome: Outcome, message: str) -> None:
        """Put ``run`` in its terminal state."""
        self.update(
            run,
            life_cycle_state=outcome.life_cycle_state,
            result_state=outcome.result_state,
            state_message=message,
            termination={"code": outcome.code, "type": outcome.kind, "message": message},
            end_time=now_ms(),
        )

    def stop(self) -> None:
        """Tell every lifecycle to kill its driver and end."""
        with self.changed:
            self.stopping = True
            self.changed.notify_all()


class RunLifecycle:
    """Takes a run from PENDING to a terminal state (``drive``, in the run's own thread)."""

    def __init__(
        self, board: RunBoard, dbfs: FakeDbfs, clusters: ClustersService, config: JobsConfig
    ) -> None:
        self._board = board
        self._dbfs = dbfs
        self._clusters = clusters
        self._config = config
        self._index = LocalIndex(config.workdir / "wheelhouse")

    def drive(self, run: FakeRun, cluster: FakeCluster) -> None:
        """PENDING -> (INTERNAL_ERROR | RUNNING -> TERMINATING -> TERMINATED)."""
        try:
            self._lifecycle(run, cluster)
        except Exception as error:  # a bug in the fake must not leave the run hanging
            self._clusters.update(cluster, "TERMINATED", event="TERMINATING")
            self._board.finish(run, FAKE_BROKEN, f"Fake Databricks error: {error!r}")

    def _lifecycle(self, run: FakeRun, cluster: FakeCluster) -> None:
        if self._sleep_unless_cancelled(run, self._config.cluster_start_seconds):
            self._terminate(cluster, USER_REQUEST)
            self._board.finish(run, CANCELED, self._cancel_message())
            return
        if run.requested_workers > self._config.max_workers_quota:
            self._fail_quota(run, cluster)
            return
        details = {"current_num_workers": run.requested_workers}
        self._clusters.update(cluster, "RUNNING", event="RUNNING", details=details)
        try:
            root = run.stdout_path.parent / "python"
            launch = build_launch(run.task, self._dbfs, run.cluster_id, root, self._index)
        except TaskSetupError as error:
            self._terminate(cluster, JOB_FINISHED)
            self._board.finish(run, error.outcome, _task_failed(run, error.message))
            return
        code, interruption = self._execute(run, launch)
        self._board.update(
            run, life_cycle_state="TERMINATING", state_message="", terminating_time=now_ms()
        )
        self._clusters.update(cluster, "TERMINATING")
        time.sleep(self._config.cluster_stop_seconds)
        self._terminate(cluster, JOB_FINISHED)
        self._conclude(run, code, interruption)

    def _terminate(self, cluster: FakeCluster, reason: dict[str, Any], message: str = "") -> None:
        self._clusters.update(
            cluster, "TERMINATED", message, event="TERMINATING", details={"reason": reason}
        )

    def _execute(self, run: FakeRun, launch: Launch) -> tuple[int, str | None]:
        """Run the driver to its end; return its exit code and why it was stopped, if it was."""
        stdout, stderr = [run.stdout_path], [run.stderr_path]
        if run.driver_log_root is not None:
            log_dir = self._dbfs.local_path(run.driver_log_root)
            log_dir.mkdir(parents=True, exist_ok=True)
            stdout.append(log_dir / "stdout")
            stderr.append(log_dir / "stderr")
        env = task_environment(
            run.task["new_cluster"],
            cluster_id=run.cluster_id,
            spark_remote=self._config.spark_remote,
            environment=launch.environment,
        )
        cwd = Path(tempfile.mkdtemp(prefix="cwd-", dir=run.stdout_path.parent))
        process = DriverProcess(launch.argv, env=env, cwd=cwd, stdout=stdout, stderr=stderr)
        self._board.update(
            run,
            life_cycle_state="RUNNING",
            state_message="In run",
            pid=process.pid,
            running_time=now_ms(),
            spark_context_id=str(random.getrandbits(62)),
        )
        interruption = self._supervise(run, process)
        code = process.finish()
        self._board.update(run, return_code=code)
        return code, interruption

    def _supervise(self, run: FakeRun, process: DriverProcess) -> str | None:
        """Wait for the driver; on cancel or timeout SIGTERM its group, SIGKILL after the
        grace; on shutdown SIGKILL it. Return "stopped", "cancelled", "timedout" or None."""
        deadline = time.monotonic() + run.timeout_seconds if run.timeout_seconds > 0 else None
        grace = self._config.cancel_grace_seconds
        interruption: str | None = None
        terminated_at = 0.0
        while process.poll() is None:
            with self._board.changed:
                self._board.changed.wait(0.1)
                if self._board.stopping:
                    interruption = "stopped"
                elif interruption is None and run.cancel_requested:
                    interruption = "cancelled"
                elif interruption is None and deadline and time.monotonic() > deadline:
                    interruption, run.timed_out = "timedout", True
            if interruption == "stopped":
                process.signal_group(signal.SIGKILL)
            elif interruption and not terminated_at:
                process.signal_group(signal.SIGTERM)
                terminated_at = time.monotonic()
            elif terminated_at and time.monotonic() > terminated_at + grace:
                process.signal_group(signal.SIGKILL)
        return interruption

    def _conclude(self, run: FakeRun, code: int, interruption: str | None) -> None:
        if interruption in ("cancelled", "stopped"):
            self._board.finish(run, CANCELED, self._cancel_message())
        elif interruption == "timedout":
            self._board.finish(run, TIMED_OUT, "Run timed out.")
        elif code == 0:
            self._board.finish(run, SUCCEEDED, "")
        else:
            message = (
                "Workload failed, see run output for details. The driver exited with code "
                f"{code}; the end of its stderr:\n{tail(run.stderr_path)}"
            )
            self._board.finish(run, FAILED, _task_failed(run, message))

    def _fail_quota(self, run: FakeRun, cluster: FakeCluster) -> None:
        azure_message = azure_quota_error(
            run.task["new_cluster"]["node_type_id"],
            run.requested_workers,
            self._config.max_workers_quota,
            self._config.region,
        )
        parameters = {"azure_error_code": "QuotaExceeded", "azure_error_message": azure_message}
        reason = {
            "code": "AZURE_QUOTA_EXCEEDED_EXCEPTION",
            "type": "CLIENT_ERROR",
            "parameters": parameters,
        }
        cause = (
            "AZURE_QUOTA_EXCEEDED_EXCEPTION(CLIENT_ERROR): azure_error_code:QuotaExceeded,"
            f"azure_error_message:{azure_message}"
        )
        self._terminate(cluster, reason, cause)
        message = (
            f"Cluster {run.cluster_id} was terminated while waiting on it to be ready: "
            f"Cluster {run.cluster_id} is in unexpected state Terminated: {cause}"
        )
        self._board.finish(run, LAUNCH_FAILED, message)

    def _cancel_message(self) -> str:
        if self._board.stopping:
            return "Run cancelled: the fake Databricks workspace shut down."
        return "Run cancelled."

    def _sleep_unless_cancelled(self, run: FakeRun, seconds: float) -> bool:
        """Sleep ``seconds``; True as soon as the run is cancelled or the fake stops."""
        with self._board.changed:
            return self._board.changed.wait_for(
                lambda: run.cancel_requested or self._board.stopping, seconds
            )


def _task_failed(run: FakeRun, message: str) -> str:
    return (
        f"Task {run.task['task_key']} failed with message: {message.rstrip().rstrip('.')}. "
        "This caused all downstream tasks to get skipped."
    )


def tail(path: Path, limit: int = 2000) -> str:
    """The last ``limit`` bytes of a log file, as text."""
    return path.read_bytes()[-limit:].decode(errors="replace")
