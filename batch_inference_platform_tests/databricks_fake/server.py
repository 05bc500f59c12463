"""``FakeDatabricks``: an Azure Databricks workspace on loopback for the real SDK and Pipes."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from types import TracebackType

from .clusters import ClustersService
from .dbfs import FakeDbfs
from .httpd import RestServer
from .jobs import JobsService
from .lifecycle import JobsConfig
from .runs import FakeRun

__all__ = ["FakeDatabricks", "FakeRun"]


class FakeDatabricks:
    """Context manager serving the Jobs (one-time runs), DBFS and Clusters REST APIs.

    ``with FakeDatabricks(dbfs_root=Path("/dbfs"), token="t", spark_remote="sc://127.0.0.1:50051",
    max_workers_quota=8) as fake:`` then ``WorkspaceClient(host=fake.url, token=fake.token)``.
    Each submitted run's task executes locally in a new virtual environment with the task's
    libraries and their dependencies installed from this environment's packages
    (``environment.py``). Driver logs and environments live in ``workdir`` (a temporary
    directory removed on exit unless given).
    """

    url: str
    token: str
    runs: dict[int, FakeRun]
    cancelled: list[int]

    def __init__(
        self,
        dbfs_root: Path = Path("/dbfs"),
        token: str = "fake-databricks-token",
        spark_remote: str | None = None,
        max_workers_quota: int = 8,
        *,
        workdir: Path | None = None,
        region: str = "westeurope",
        cluster_start_seconds: float = 0.2,
        cluster_stop_seconds: float = 0.1,
        cancel_grace_seconds: float = 10.0,
    ) -> None:
        self.token = token
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="fake-databricks-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.dbfs = FakeDbfs(dbfs_root)
        self._server = RestServer(token)
        self.url = self._server.url
        self._jobs = JobsService(
            self.url,
            self.dbfs,
            clusters := ClustersService(),
            JobsConfig(
                workdir=self.workdir,
                spark_remote=spark_remote,
                max_workers_quota=max_workers_quota,
                region=region,
                cluster_start_seconds=cluster_start_seconds,
                cluster_stop_seconds=cluster_stop_seconds,
                cancel_grace_seconds=cancel_grace_seconds,
            ),
        )
        self.runs = self._jobs.runs
        self.cancelled = self._jobs.cancelled
        self._server.routes = {**self.dbfs.routes(), **clusters.routes(), **self._jobs.routes()}

    def __enter__(self) -> FakeDatabricks:
        self._server.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop serving, kill still-running drivers' process groups, drop an own workdir."""
        self._jobs.shutdown()
        self._server.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def wait_for_run(self, run_id: int, timeout: float = 120) -> FakeRun:
        """Block until run ``run_id`` reaches TERMINATED, SKIPPED or INTERNAL_ERROR."""
        return self._jobs.wait(run_id, timeout)
