"""One-time job runs (``runs/submit``) and the Run JSON that ``runs/get`` answers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .clusters import CREATOR
from .protocol import Json, now_ms

TERMINAL_STATES = frozenset({"TERMINATED", "SKIPPED", "INTERNAL_ERROR"})
# RunLifeCycleState -> the newer ``status.state`` (RunLifecycleStateV2State).
_STATUS_STATE = {"INTERNAL_ERROR": "TERMINATED", "SKIPPED": "TERMINATED"}


@dataclass(frozen=True)
class Outcome:
    """How a run ends: its lifecycle and result states and ``status.termination_details``."""

    life_cycle_state: str
    result_state: str
    code: str
    kind: str


SUCCEEDED = Outcome("TERMINATED", "SUCCESS", "SUCCESS", "SUCCESS")
FAILED = Outcome("TERMINATED", "FAILED", "RUN_EXECUTION_ERROR", "CLIENT_ERROR")
CANCELED = Outcome("TERMINATED", "CANCELED", "USER_CANCELED", "SUCCESS")
TIMED_OUT = Outcome("TERMINATED", "TIMEDOUT", "RUN_EXECUTION_ERROR", "CLIENT_ERROR")
FILE_MISSING = Outcome("TERMINATED", "FAILED", "RESOURCE_NOT_FOUND", "CLIENT_ERROR")
LIBRARY_FAILED = Outcome("INTERNAL_ERROR", "FAILED", "LIBRARY_INSTALLATION_ERROR", "CLIENT_ERROR")
LAUNCH_FAILED = Outcome("INTERNAL_ERROR", "FAILED", "CLOUD_FAILURE", "CLIENT_ERROR")
FAKE_BROKEN = Outcome("INTERNAL_ERROR", "FAILED", "INTERNAL_ERROR", "INTERNAL_ERROR")


@dataclass
class FakeRun:
    """A submitted run, its single task and what executing it produced.

    ``tasks`` holds the submitted task dict(s) as JSON; ``requested_workers`` is
    ``num_workers`` or ``autoscale.max_workers``; ``return_code`` is the driver's exit code
    (negative: killed by that signal; None: it never started); ``stdout_path``/``stderr_path``
    are the local driver logs and ``driver_log_root`` their DBFS copy (``dbfs:/…/driver``) when
    ``cluster_log_conf.dbfs`` was given. Read fields after ``FakeDatabricks.wait_for_run``.
    """

    run_id: int
    task_run_id: int
    job_id: int
    run_name: str
    tasks: list[dict[str, Any]]
    cluster_id: str
    requested_workers: int
    stdout_path: Path
    stderr_path: Path
    driver_log_root: str | None = None
    timeout_seconds: int = 0
    life_cycle_state: str = "PENDING"
    result_state: str | None = None
    state_message: str = "Waiting for cluster"
    termination: Json | None = None
    return_code: int | None = None
    pid: int | None = None
    cancel_requested: bool = False
    timed_out: bool = False
    spark_context_id: str | None = None
    start_time: int = field(default_factory=now_ms)
    running_time: int | None = None
    terminating_time: int | None = None
    end_time: int | None = None

    @property
    def task(self) -> dict[str, Any]:
        """The submitted task (the fake runs exactly one)."""
        return self.tasks[0]

    @property
    def is_terminal(self) -> bool:
        """Whether the run reached TERMINATED, SKIPPED or INTERNAL_ERROR."""
        return self.life_cycle_state in TERMINAL_STATES

    def _durations(self) -> Json:
        end = self.end_time or now_ms()
        running = self.running_time or end
        terminating = self.terminating_time or end
        return {
            "start_time": self.start_time,
            "end_time": self.end_time or 0,
            "setup_duration": running - self.start_time,
            "execution_duration": max(terminating - running, 0),
            "cleanup_duration": end - terminating if self.end_time else 0,
            "run_duration": end - self.start_time,
        }

    def _state(self) -> Json:
        state: Json = {
            "life_cycle_state": self.life_cycle_state,
            "state_message": self.state_message,
            "user_cancelled_or_timedout": self.cancel_requested or self.timed_out,
        }
        if self.result_state is not None:
            state["result_state"] = self.result_state
        status: Json = {"state": _STATUS_STATE.get(self.life_cycle_state, self.life_cycle_state)}
        if self.termination is not None:
            status["termination_details"] = self.termination
        return {"state": state, "status": status}

    def _cluster_instance(self) -> Json:
        instance: Json = {"cluster_id": self.cluster_id}
        if self.spark_context_id is not None:
            instance["spark_context_id"] = self.spark_context_id
        return instance

    def task_json(self, base_url: str) -> Json:
        """The RunTask entry of ``tasks[]`` (also the ``metadata`` of ``runs/get-output``)."""
        return {
            **self.task,
            "run_id": self.task_run_id,
            "attempt_number": 0,
            "cluster_instance": self._cluster_instance(),
            "run_page_url": f"{base_url}/#job/{self.job_id}/run/{self.task_run_id}",
            **self._state(),
            **self._durations(),
        }

    def to_json(self, base_url: str) -> Json:
        """The Run shape of ``runs/get``."""
        return {
            "job_id": self.job_id,
            "run_id": self.run_id,
            "original_attempt_run_id": self.run_id,
            "number_in_job": self.run_id,
            "attempt_number": 0,
            "run_name": self.run_name,
            "run_type": "SUBMIT_RUN",
            "trigger": "ONE_TIME",
            "format": "MULTI_TASK",
            "creator_user_name": CREATOR,
            "run_page_url": f"{base_url}/#job/runs/{self.run_id}",
            "cluster_instance": self._cluster_instance(),
            "cluster_spec": {"new_cluster": self.task["new_cluster"]},
            "tasks": [self.task_json(base_url)],
            **self._state(),
            **self._durations(),
        }
