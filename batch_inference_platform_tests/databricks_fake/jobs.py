"""The Jobs API for one-time runs: ``runs/submit``, ``runs/get``, ``runs/cancel`` and
``runs/get-output`` (2.1 and 2.2 paths)."""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

from .clusters import ClustersService, FakeCluster, new_cluster_id
from .dbfs import FakeDbfs
from .lifecycle import JobsConfig, RunBoard, RunLifecycle, tail
from .protocol import ApiError, Json, Params, Route, int_param, invalid_parameter
from .runs import FakeRun
from .tasks import driver_log_root, validate_task

OUTPUT_LIMIT = 64 * 1024


class JobsService:
    """Submitted runs by id; one lifecycle thread per run, all state changes under one lock."""

    def __init__(
        self, base_url: str, dbfs: FakeDbfs, clusters: ClustersService, config: JobsConfig
    ) -> None:
        self._base_url = base_url
        self._clusters = clusters
        self._workdir = config.workdir
        self._board = RunBoard()
        self._changed = self._board.changed
        self._lifecycle = RunLifecycle(self._board, dbfs, clusters, config)
        self.runs: dict[int, FakeRun] = {}
        self.cancelled: list[int] = []
        self._task_runs: dict[int, FakeRun] = {}
        self._idempotency: dict[str, int] = {}
        self._ids = itertools.count(1)
        self._threads: list[threading.Thread] = []

    def routes(self) -> dict[tuple[str, str], Route]:
        """The HTTP routes of this service (2.1 and 2.2 paths), keyed by (method, path)."""
        table: dict[tuple[str, str], Route] = {}
        for version in ("2.1", "2.2"):
            prefix = f"/api/{version}/jobs/runs"
            table["POST", f"{prefix}/submit"] = self.submit
            table["GET", f"{prefix}/get"] = self.get
            table["POST", f"{prefix}/cancel"] = self.cancel
            table["GET", f"{prefix}/get-output"] = self.get_output
        return table

    # -- endpoints -----------------------------------------------------------------------------

    def submit(self, params: Params) -> Json:
        """POST runs/submit: validate, create the job cluster, start the run's lifecycle."""
        tasks = params.get("tasks")
        if not isinstance(tasks, list) or len(tasks) != 1:
            raise invalid_parameter("The fake runs exactly one task per submitted run (tasks).")
        workers = validate_task(tasks[0])
        token = params.get("idempotency_token")
        with self._changed:
            if token and token in self._idempotency:
                return {"run_id": self._idempotency[token]}
            if self._board.stopping:
                raise ApiError(503, "TEMPORARILY_UNAVAILABLE", "The workspace is shutting down.")
            run = self._new_run(params, tasks[0], workers)
            if token:
                self._idempotency[token] = run.run_id
            cluster = FakeCluster(
                run.cluster_id, dict(run.task["new_cluster"]), f"job-{run.job_id}-run-{run.run_id}"
            )
            self._clusters.add(cluster)
            thread = threading.Thread(
                target=self._lifecycle.drive,
                args=(run, cluster),
                name=f"fake-run-{run.run_id}",
                daemon=True,
            )
            self._threads.append(thread)
            thread.start()
        return {"run_id": run.run_id}

    def _new_run(self, params: Params, task: dict[str, Any], workers: int) -> FakeRun:
        job_id, run_id, task_run_id = next(self._ids), next(self._ids), next(self._ids)
        run_dir = self._workdir / f"run-{run_id}"
        run_dir.mkdir(parents=True)
        cluster_id = new_cluster_id()
        run = FakeRun(
            run_id=run_id,
            task_run_id=task_run_id,
            job_id=job_id,
            run_name=str(params.get("run_name") or "Untitled"),
            tasks=[task],
            cluster_id=cluster_id,
            requested_workers=workers,
            stdout_path=run_dir / "stdout",
            stderr_path=run_dir / "stderr",
            driver_log_root=driver_log_root(task["new_cluster"], cluster_id),
            timeout_seconds=_timeout_seconds(params, task),
        )
        run.stdout_path.touch()
        run.stderr_path.touch()
        self.runs[run_id] = run
        self._task_runs[task_run_id] = run
        return run

    def _run(self, params: Params) -> FakeRun:
        run_id = int_param(params, "run_id")
        run = self.runs.get(run_id)
        if run is None:
            # Real answer; the SDK maps it to ResourceDoesNotExist.
            raise invalid_parameter(f"Run {run_id} does not exist.")
        return run

    def get(self, params: Params) -> Json:
        """GET runs/get: the Run, with its single task in ``tasks``."""
        with self._changed:
            return self._run(params).to_json(self._base_url)

    def cancel(self, params: Params) -> Json:
        """POST runs/cancel: asynchronous; a finished run is left as it is."""
        with self._changed:
            run = self._run(params)
            self.cancelled.append(run.run_id)
            if not run.is_terminal:
                run.cancel_requested = True
                self._changed.notify_all()
        return {}

    def get_output(self, params: Params) -> Json:
        """GET runs/get-output for a task run id: stdout as ``logs``, stderr as the error."""
        run_id = int_param(params, "run_id")
        with self._changed:
            if run_id in self.runs:
                raise invalid_parameter(
                    "Retrieving the output of runs with multiple tasks is not supported. "
                    "Please retrieve the output of each individual task run instead."
                )
            run = self._task_runs.get(run_id)
            if run is None:
                raise invalid_parameter(f"Run {run_id} does not exist.")
            output: Json = {"metadata": run.task_json(self._base_url)}
            failed = run.result_state == "FAILED"
        logs = run.stdout_path.read_bytes()
        output["logs"] = logs[-OUTPUT_LIMIT:].decode(errors="replace")
        output["logs_truncated"] = len(logs) > OUTPUT_LIMIT
        if failed:
            trace = tail(run.stderr_path)
            output["error_trace"] = trace
            output["error"] = (
                trace.strip().splitlines() or [output["metadata"]["state"]["state_message"]]
            )[-1]
        return output

    # -- for the owner -------------------------------------------------------------------------

    def wait(self, run_id: int, timeout: float) -> FakeRun:
        """Block until run ``run_id`` is terminal; TimeoutError otherwise."""
        with self._changed:
            run = self.runs[run_id]
            if not self._changed.wait_for(lambda: run.is_terminal, timeout):
                raise TimeoutError(f"run {run_id} is still {run.life_cycle_state} after {timeout}s")
            return run

    def shutdown(self, timeout: float = 30) -> None:
        """Kill every running driver's process group and wait for the lifecycle threads."""
        self._board.stop()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 0.1))


def _timeout_seconds(params: Params, task: Params) -> int:
    """The tighter of the run's and the task's ``timeout_seconds`` (0: no timeout)."""
    limits = [int_param(params, "timeout_seconds", 0), int_param(task, "timeout_seconds", 0)]
    return min((limit for limit in limits if limit > 0), default=0)
