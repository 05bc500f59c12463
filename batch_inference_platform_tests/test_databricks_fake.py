"""The Databricks fake driven by the real ``databricks-sdk`` and ``dagster_databricks`` over
loopback HTTP: auth, DBFS, one-time runs really executed as subprocesses, cluster quota
failures, cancellation, wheel tasks and a Pipes round trip into Dagster."""

import base64
import io
import json
import signal
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from textwrap import dedent
from typing import Any

import dagster as dg
import pytest
from dagster_databricks import PipesDatabricksClient
from dagster_databricks.pipes import PipesDbfsLogReader, PipesDbfsMessageReader
from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import (
    BadRequest,
    InvalidParameterValue,
    OperationFailed,
    ResourceAlreadyExists,
    ResourceDoesNotExist,
    Unauthenticated,
)
from databricks.sdk.service import compute, files, jobs

from batch_inference_platform.lib.databricks import artifact

from .databricks_fake import FakeDatabricks, FakeRun

TOKEN = "dapi-test-token"
CLUSTER: dict[str, Any] = {
    "spark_version": "15.4.x-scala2.12",
    "node_type_id": "Standard_DS3_v2",
    "num_workers": 2,
}


def workspace(tmp_path: Path, **options: Any) -> FakeDatabricks:
    """A fast fake workspace with its DBFS root and work dir under ``tmp_path``."""
    return FakeDatabricks(
        dbfs_root=tmp_path / "dbfs",
        token=TOKEN,
        spark_remote="sc://127.0.0.1:15002",
        max_workers_quota=8,
        workdir=tmp_path / "work",
        cluster_start_seconds=0.05,
        cluster_stop_seconds=0.05,
        **options,
    )


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeDatabricks]:
    with workspace(tmp_path) as fake:
        yield fake


@pytest.fixture
def client(fake: FakeDatabricks) -> WorkspaceClient:
    return WorkspaceClient(host=fake.url, token=fake.token, auth_type="pat")


def put_file(client: WorkspaceClient, path: str, text: str) -> str:
    """Write ``text`` to DBFS ``path``; return its ``dbfs:`` URI."""
    contents = base64.b64encode(dedent(text).encode()).decode()
    client.dbfs.put(path, contents=contents, overwrite=True)
    return f"dbfs:{path}"


def submit(client: WorkspaceClient, task: dict[str, Any]) -> int:
    """Submit a one-time run of ``task`` through the SDK; return its run id."""
    return client.jobs.submit(run_name="test", tasks=[jobs.SubmitTask.from_dict(task)]).run_id


def python_task(python_file: str, **fields: Any) -> dict[str, Any]:
    return {
        "task_key": "main",
        "new_cluster": dict(CLUSTER),
        "spark_python_task": {"python_file": python_file},
        **fields,
    }


def read_dbfs(client: WorkspaceClient, path: str) -> str:
    return base64.b64decode(client.dbfs.read(path).data or "").decode()


def wait_for_stdout(run: FakeRun, text: str, timeout: float = 20) -> None:
    """Poll the run's local driver stdout until it contains ``text``."""
    deadline = time.monotonic() + timeout
    while text not in run.stdout_path.read_text():
        assert time.monotonic() < deadline, f"the driver never printed {text!r}"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_requests_need_the_bearer_token(fake: FakeDatabricks) -> None:
    request = urllib.request.Request(f"{fake.url}/api/2.0/dbfs/get-status?path=/")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 401
    body = json.loads(refused.value.read())
    assert body["error_code"] == "UNAUTHENTICATED" and body["message"]

    wrong = WorkspaceClient(host=fake.url, token="not-the-token", auth_type="pat")
    with pytest.raises(Unauthenticated, match="Invalid access token"):
        wrong.dbfs.get_status("/")


def test_dbfs_round_trip(fake: FakeDatabricks, client: WorkspaceClient) -> None:
    put_file(client, "/data/a.txt", "hello dbfs")
    assert (fake.dbfs.root / "data" / "a.txt").read_text() == "hello dbfs"
    assert read_dbfs(client, "dbfs:/data/a.txt") == "hello dbfs"
    part = client.dbfs.read("/data/a.txt", offset=6, length=3)
    assert (part.bytes_read, base64.b64decode(part.data or "")) == (3, b"dbf")
    status = client.dbfs.get_status("/data/a.txt")
    assert (status.path, status.is_dir, status.file_size) == ("/data/a.txt", False, 10)
    with pytest.raises(ResourceAlreadyExists):
        client.dbfs.put("/data/a.txt", contents="eA==")

    payload = bytes(range(256)) * 6000  # 1.5 MB: create + two add-blocks + close
    client.dbfs.upload("dbfs:/data/big.bin", io.BytesIO(payload), overwrite=True)
    assert client.dbfs.download("/data/big.bin").read() == payload

    client.dbfs.mkdirs("/data/sub/deeper")
    listed = {(info.path, info.is_dir) for info in client.dbfs.list("/data")}
    assert listed == {("/data/a.txt", False), ("/data/big.bin", False), ("/data/sub", True)}

    with pytest.raises(BadRequest, match="non-empty directory"):
        files.DbfsAPI(client.api_client).delete("/data")
    client.dbfs.delete("/data", recursive=True)
    with pytest.raises(ResourceDoesNotExist):
        client.dbfs.get_status("/data")
    with pytest.raises(ResourceDoesNotExist):
        client.dbfs.read("/data/a.txt")


def test_python_task_succeeds_and_streams_driver_logs_to_dbfs(
    fake: FakeDatabricks, client: WorkspaceClient
) -> None:
    script = put_file(
        client,
        "/jobs/hello.py",
        """
        import os, sys
        print("hello from the driver", sys.argv[1:])
        print("env", os.environ["DATABRICKS_RUNTIME_VERSION"], os.environ["SPARK_REMOTE"],
              os.environ["GREETING"])
        print("cwd", os.getcwd())
        print("warming up", file=sys.stderr)
        """,
    )
    task = python_task(script)
    task["spark_python_task"]["parameters"] = ["a", "b"]
    task["new_cluster"]["spark_env_vars"] = {"GREETING": "hi"}
    task["new_cluster"]["cluster_log_conf"] = {"dbfs": {"destination": "dbfs:/cluster-logs"}}
    run_id = submit(client, task)
    run = fake.wait_for_run(run_id, timeout=30)

    assert (run.life_cycle_state, run.result_state, run.return_code) == ("TERMINATED", "SUCCESS", 0)
    stdout = run.stdout_path.read_text()
    assert "hello from the driver ['a', 'b']" in stdout
    assert "env 15.4.x-scala2.12 sc://127.0.0.1:15002 hi" in stdout
    assert f"cwd {fake.workdir.resolve()}" in stdout
    assert run.driver_log_root == f"dbfs:/cluster-logs/{run.cluster_id}/driver"
    assert read_dbfs(client, f"{run.driver_log_root}/stdout") == stdout
    assert read_dbfs(client, f"{run.driver_log_root}/stderr") == "warming up\n"
    reader = PipesDbfsLogReader(
        client=client, remote_log_name="stdout", target_stream=io.StringIO()
    )
    chunk = reader.download_log_chunk({"extras": {"cluster_driver_log_root": run.driver_log_root}})
    assert chunk == stdout

    got = client.jobs.get_run(run_id)
    assert got.state is not None and got.state.life_cycle_state == jobs.RunLifeCycleState.TERMINATED
    assert got.state.result_state == jobs.RunResultState.SUCCESS
    assert got.run_page_url == f"{fake.url}/#job/runs/{run_id}"
    assert got.cluster_instance is not None and got.cluster_instance.cluster_id == run.cluster_id
    assert got.tasks and got.tasks[0].cluster_instance is not None
    assert got.tasks[0].cluster_instance.cluster_id == run.cluster_id
    assert got.tasks[0].run_id is not None
    output = client.jobs.get_run_output(got.tasks[0].run_id)
    assert output.logs is not None and "hello from the driver" in output.logs

    cluster = client.clusters.get(run.cluster_id)
    assert (cluster.state, cluster.num_workers) == (compute.State.TERMINATED, 2)
    assert cluster.termination_reason is not None
    assert cluster.termination_reason.code == compute.TerminationReasonCode.JOB_FINISHED
    events = [event.type for event in client.clusters.events(run.cluster_id)]
    assert compute.EventType.CREATING in events and compute.EventType.RUNNING in events


def test_failing_task_reports_the_end_of_stderr(
    fake: FakeDatabricks, client: WorkspaceClient
) -> None:
    script = put_file(
        client,
        "/jobs/fail.py",
        """
        import sys
        print("loading features", file=sys.stderr)
        raise SystemExit("boom: feature table is empty")
        """,
    )
    run = fake.wait_for_run(submit(client, python_task(script)), timeout=30)

    assert (run.life_cycle_state, run.result_state, run.return_code) == ("TERMINATED", "FAILED", 1)
    assert "boom: feature table is empty" in run.state_message
    state = client.jobs.get_run(run.run_id).state
    assert state is not None and state.result_state == jobs.RunResultState.FAILED
    assert state.state_message is not None and "boom: feature table is empty" in state.state_message
    output = client.jobs.get_run_output(run.task_run_id)
    assert output.error == "boom: feature table is empty"


def test_quota_exceeded_cluster_fails_the_run(
    fake: FakeDatabricks, client: WorkspaceClient
) -> None:
    task = python_task("dbfs:/jobs/never-read.py")
    task["new_cluster"] = {
        "spark_version": "15.4.x-scala2.12",
        "node_type_id": "Standard_DS3_v2",
        "autoscale": {"min_workers": 2, "max_workers": 9},
    }
    run = fake.wait_for_run(submit(client, task), timeout=30)

    assert (run.life_cycle_state, run.result_state) == ("INTERNAL_ERROR", "FAILED")
    assert run.requested_workers == 9 and run.pid is None
    assert "azure_error_code:QuotaExceeded" in run.state_message
    assert "Additional Required: 40" in run.state_message  # (9 workers + driver) x 4 vCPUs
    with pytest.raises(OperationFailed, match="QuotaExceeded"):
        client.jobs.wait_get_run_job_terminated_or_skipped(run.run_id)
    reason = client.clusters.get(run.cluster_id).termination_reason
    assert reason is not None
    assert reason.code == compute.TerminationReasonCode.AZURE_QUOTA_EXCEEDED_EXCEPTION


@pytest.mark.parametrize(
    ("cluster", "field"),
    [
        ({"node_type_id": "Standard_DS3_v2", "num_workers": 1}, "spark_version"),
        ({"spark_version": "15.4.x-scala2.12", "num_workers": 1}, "node_type_id"),
        ({**CLUSTER, "autoscale": {"min_workers": 1, "max_workers": 2}}, "num_workers"),
        ({**{k: v for k, v in CLUSTER.items() if k != "num_workers"}}, "autoscale"),
        (
            {
                "spark_version": "15.4",
                "node_type_id": "Standard_DS3_v2",
                "autoscale": {"min_workers": 3, "max_workers": 2},
            },
            "min_workers",
        ),
    ],
)
def test_invalid_cluster_specs_are_rejected(
    fake: FakeDatabricks, client: WorkspaceClient, cluster: dict[str, Any], field: str
) -> None:
    task = python_task("dbfs:/x.py")
    task["new_cluster"] = cluster
    with pytest.raises(InvalidParameterValue, match=field):
        submit(client, task)
    assert fake.runs == {}


def test_unknown_ids_raise_does_not_exist(client: WorkspaceClient) -> None:
    with pytest.raises(ResourceDoesNotExist):
        client.jobs.get_run(424242)
    with pytest.raises(ResourceDoesNotExist):
        client.clusters.get("0000-000000-nothere")


def test_cancel_kills_the_driver_process_group(
    fake: FakeDatabricks, client: WorkspaceClient, tmp_path: Path
) -> None:
    pids_file = tmp_path / "pids"
    script = put_file(
        client,
        "/jobs/sleep.py",
        """
        import os, subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        with open(os.environ["PIDS_FILE"], "w") as out:
            out.write(f"{os.getpid()} {child.pid}")
        time.sleep(60)
        """,
    )
    task = python_task(script)
    task["new_cluster"]["spark_env_vars"] = {"PIDS_FILE": str(pids_file)}
    run_id = submit(client, task)
    deadline = time.monotonic() + 20
    while not pids_file.exists() or not pids_file.read_text():
        assert time.monotonic() < deadline, "the driver never started"
        time.sleep(0.05)
    pids = [int(pid) for pid in pids_file.read_text().split()]
    assert all(_alive(pid) for pid in pids)
    assert fake.runs[run_id].life_cycle_state == "RUNNING"

    client.jobs.cancel_run(run_id)
    run = fake.wait_for_run(run_id, timeout=15)

    assert (run.life_cycle_state, run.result_state) == ("TERMINATED", "CANCELED")
    assert fake.cancelled == [run_id]
    assert not any(_alive(pid) for pid in pids)
    state = client.jobs.get_run(run_id).state
    assert state is not None and state.result_state == jobs.RunResultState.CANCELED


SLEEPER = """
import signal, sys, time
if "--ignore-sigterm" in sys.argv:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("sleeping", flush=True)
time.sleep(60)
"""


def test_cancel_escalates_to_sigkill_after_the_grace(tmp_path: Path) -> None:
    with workspace(tmp_path, cancel_grace_seconds=0.5) as fake:
        client = WorkspaceClient(host=fake.url, token=fake.token, auth_type="pat")
        task = python_task(put_file(client, "/jobs/sleeper.py", SLEEPER))
        task["spark_python_task"]["parameters"] = ["--ignore-sigterm"]
        run_id = submit(client, task)
        wait_for_stdout(fake.runs[run_id], "sleeping")
        client.jobs.cancel_run(run_id)
        run = fake.wait_for_run(run_id, timeout=15)

    assert (run.result_state, run.return_code) == ("CANCELED", -signal.SIGKILL)


def test_closing_the_fake_kills_running_drivers(tmp_path: Path) -> None:
    with workspace(tmp_path) as fake:
        client = WorkspaceClient(host=fake.url, token=fake.token, auth_type="pat")
        run_id = submit(client, python_task(put_file(client, "/jobs/sleeper.py", SLEEPER)))
        run = fake.runs[run_id]
        wait_for_stdout(run, "sleeping")
        assert run.pid is not None and _alive(run.pid)

    assert not _alive(run.pid)
    assert (run.life_cycle_state, run.result_state) == ("TERMINATED", "CANCELED")


TINY_CLI = """
import sys
import tiny_scorer

def main() -> int:
    print("scored", sys.argv, "from", tiny_scorer.__file__)
    return 0
"""


def build_wheel(cli: str = TINY_CLI, requires: tuple[str, ...] = ()) -> bytes:
    """A minimal pure-Python wheel: package ``tiny-scorer``, console script ``tiny-score``
    running ``tiny_scorer.cli:main`` from ``cli``, dependencies ``requires``."""
    info = "tiny_scorer-0.1.0.dist-info"
    metadata = "Metadata-Version: 2.1\nName: tiny-scorer\nVersion: 0.1.0\n"
    metadata += "".join(f"Requires-Dist: {requirement}\n" for requirement in requires)
    members = {
        "tiny_scorer/__init__.py": "",
        "tiny_scorer/cli.py": dedent(cli),
        f"{info}/METADATA": metadata,
        f"{info}/WHEEL": "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{info}/entry_points.txt": "[console_scripts]\ntiny-score = tiny_scorer.cli:main\n",
    }
    members[f"{info}/RECORD"] = "".join(f"{name},,\n" for name in members) + f"{info}/RECORD,,\n"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in members.items():
            archive.writestr(name, text)
    return buffer.getvalue()


def upload_wheel(client: WorkspaceClient, folder: str, wheel: bytes) -> str:
    """Upload ``wheel`` as ``dbfs:/<folder>/tiny_scorer-0.1.0-py3-none-any.whl``."""
    uri = f"dbfs:/{folder}/tiny_scorer-0.1.0-py3-none-any.whl"
    client.dbfs.upload(uri, io.BytesIO(wheel), overwrite=True)
    return uri


def wheel_task(
    library: str, package: str = "tiny-scorer", entry_point: str = "tiny-score", *parameters: str
) -> dict[str, Any]:
    return {
        "task_key": "score",
        "new_cluster": dict(CLUSTER),
        "python_wheel_task": {
            "package_name": package,
            "entry_point": entry_point,
            "parameters": list(parameters),
        },
        "libraries": [{"whl": library}],
    }


def test_python_wheel_task_runs_the_console_script(
    fake: FakeDatabricks, client: WorkspaceClient
) -> None:
    wheel_uri = upload_wheel(client, "wheels", build_wheel())
    good = submit(
        client, wheel_task(wheel_uri, "tiny-scorer", "tiny-score", "--date", "2026-11-02")
    )
    missing = submit(client, wheel_task("dbfs:/wheels/missing-0.1-py3-none-any.whl"))
    run, failed = fake.wait_for_run(good, timeout=30), fake.wait_for_run(missing, timeout=30)

    assert (run.result_state, run.return_code) == ("SUCCESS", 0), run.state_message
    stdout = run.stdout_path.read_text()
    assert "scored ['tiny-score', '--date', '2026-11-02'] from " in stdout
    # Installed into the run's own environment.
    site = run.stdout_path.parent / "python" / "lib"
    assert f"from {site}/python3." in stdout and "/site-packages/tiny_scorer/__init__.py" in stdout
    assert (failed.life_cycle_state, failed.result_state) == ("INTERNAL_ERROR", "FAILED")
    assert "Library installation failed" in failed.state_message
    assert "dbfs:/wheels/missing-0.1-py3-none-any.whl" in failed.state_message


DECLARING_CLI = """
import importlib.util, sys
import yaml

def main() -> int:
    print("prefix", sys.prefix)
    print("yaml from", yaml.__file__)
    for name in ("pytest", "batch_inference_platform", "dagster"):
        print(name, "importable:", importlib.util.find_spec(name) is not None)
    return 0
"""


def test_a_wheel_gets_what_it_declares_and_nothing_else(
    fake: FakeDatabricks, client: WorkspaceClient
) -> None:
    """Each task runs in a clean environment: the wheel and its declared dependencies (from
    the packages installed here), never the test environment's other packages."""
    declared = upload_wheel(client, "declared", build_wheel(DECLARING_CLI, ("pyyaml>=6",)))
    undeclared = upload_wheel(client, "undeclared", build_wheel(DECLARING_CLI))
    run_ids = [submit(client, wheel_task(uri)) for uri in (declared, undeclared)]
    good, bad = (fake.wait_for_run(run_id, timeout=60) for run_id in run_ids)
    assert (good.result_state, good.return_code) == ("SUCCESS", 0), good.state_message
    stdout = good.stdout_path.read_text()
    assert f"prefix {good.stdout_path.parent / 'python'}\n" in stdout
    assert "yaml from " in stdout
    assert "pytest importable: False" in stdout
    assert "batch_inference_platform importable: False" in stdout
    assert "dagster importable: False" in stdout
    assert (bad.life_cycle_state, bad.result_state) == ("TERMINATED", "FAILED")
    assert "ModuleNotFoundError: No module named 'yaml'" in bad.state_message


def test_a_declared_dependency_that_cannot_be_installed_fails_the_library(
    fake: FakeDatabricks, client: WorkspaceClient
) -> None:
    wheel = build_wheel(requires=("tiny-dependency-nobody-publishes>=1",))
    run = fake.wait_for_run(submit(client, wheel_task(upload_wheel(client, "w", wheel))))

    assert (run.life_cycle_state, run.result_state) == ("INTERNAL_ERROR", "FAILED")
    assert run.pid is None
    assert "Library installation failed" in run.state_message
    assert "No matching distribution found for tiny-dependency-nobody-publishes" in (
        run.state_message
    )


def test_a_platform_wheel_missing_a_module_fails_the_task(
    fake: FakeDatabricks, client: WorkspaceClient, tmp_path: Path
) -> None:
    """The platform is installed here from source (editable), so a wheel that left out a
    package would still import it if the task saw this environment; it does not."""
    built = artifact.build_wheel(tmp_path / "built")
    broken = tmp_path / "broken" / built.name
    broken.parent.mkdir()
    with zipfile.ZipFile(built) as source, zipfile.ZipFile(broken, "w") as target:
        for item in source.infolist():
            if not item.filename.startswith("spark_jobs/"):
                target.writestr(item, source.read(item))
    uploads = []
    for wheel in (built, broken):
        uri = f"dbfs:/{wheel.parent.name}/{wheel.name}"
        client.dbfs.upload(uri, io.BytesIO(wheel.read_bytes()), overwrite=True)
        uploads.append(uri)
    run_ids = [
        submit(client, wheel_task(uri, "batch_inference_platform", "score-partitions", "--help"))
        for uri in uploads
    ]
    complete, missing = (fake.wait_for_run(run_id, timeout=120) for run_id in run_ids)

    assert (complete.result_state, complete.return_code) == ("SUCCESS", 0), complete.state_message
    assert "usage: score-partitions" in complete.stdout_path.read_text()
    assert (missing.life_cycle_state, missing.result_state) == ("TERMINATED", "FAILED")
    assert "No module named 'spark_jobs'" in missing.state_message


PIPES_SCRIPT = """
from dagster_pipes import PipesDbfsContextLoader, PipesDbfsMessageWriter, open_dagster_pipes


class NoSparkDbfsMessageWriter(PipesDbfsMessageWriter):
    # The stock writer reads the cluster log location from the Databricks-configured
    # SparkSession; this test's "cluster" has no Spark.
    def get_opened_extras(self):
        return {}


with open_dagster_pipes(
    context_loader=PipesDbfsContextLoader(),
    message_writer=NoSparkDbfsMessageWriter(interval=0.5),
) as pipes:
    rows = pipes.get_extra("rows")
    pipes.log.info(f"scoring {rows} rows on {pipes.asset_key}")
    pipes.report_asset_materialization(metadata={"rows": rows})
"""


def test_pipes_databricks_client_materializes_through_the_fake(tmp_path: Path) -> None:
    with FakeDatabricks(
        dbfs_root=Path("/dbfs"),  # dagster_pipes' DBFS loader/writer hardcode /dbfs
        token=TOKEN,
        workdir=tmp_path / "work",
        cluster_start_seconds=0.05,
        cluster_stop_seconds=0.05,
    ) as fake:
        client = WorkspaceClient(host=fake.url, token=fake.token, auth_type="pat")
        pipes_client = PipesDatabricksClient(
            client=client,
            poll_interval_seconds=0.5,
            message_reader=PipesDbfsMessageReader(client=client, interval=0.5),
        )
        script_dir = f"/tmp/pipes-test-{uuid.uuid4().hex}"
        try:
            python_file = put_file(client, f"{script_dir}/score.py", PIPES_SCRIPT)

            @dg.asset
            def scores(
                context: dg.AssetExecutionContext, pipes_databricks: PipesDatabricksClient
            ) -> dg.MaterializeResult:
                # A cluster has no dagster-pipes unless the task installs it.
                libraries = [{"pypi": {"package": "dagster-pipes"}}]
                task = jobs.SubmitTask.from_dict(python_task(python_file, libraries=libraries))
                invocation = pipes_databricks.run(context=context, task=task, extras={"rows": 3})
                return invocation.get_materialize_result()

            result = dg.materialize([scores], resources={"pipes_databricks": pipes_client})
        finally:
            client.dbfs.delete(script_dir, recursive=True)
        runs = list(fake.runs.values())

    assert result.success
    (materialization,) = result.asset_materializations_for_node("scores")
    assert materialization.metadata["rows"] == dg.IntMetadataValue(3)
    (run,) = runs
    assert materialization.metadata["Databricks Job Run ID"] == dg.TextMetadataValue(
        str(run.run_id)
    )
    assert run.result_state == "SUCCESS"
    assert "DAGSTER_PIPES_CONTEXT" in run.task["new_cluster"]["spark_env_vars"]
