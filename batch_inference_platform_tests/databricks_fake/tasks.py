"""Turning a submitted task into a local driver command: validation, wheels, environment."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .clusters import requested_workers
from .dbfs import FakeDbfs
from .environment import Environment, LibraryError, LocalIndex, create_environment
from .protocol import invalid_parameter
from .runs import FILE_MISSING, LIBRARY_FAILED, Outcome

TASK_KINDS = ("spark_python_task", "python_wheel_task")

# Runs a wheel entry point: argv is [-c, module, attribute, entry_point, *parameters].
WHEEL_BOOTSTRAP = """\
import importlib, sys
target = importlib.import_module(sys.argv[1])
for name in sys.argv[2].split("."):
    target = getattr(target, name)
sys.argv = sys.argv[3:]
sys.exit(target())
"""


@dataclass(frozen=True)
class Launch:
    """How to start a task's driver: the command, run by its environment's interpreter."""

    argv: list[str]
    environment: Environment


class TaskSetupError(Exception):
    """The task cannot start (missing file, library installation failure)."""

    def __init__(self, message: str, outcome: Outcome) -> None:
        super().__init__(message)
        self.message = message
        self.outcome = outcome


def validate_task(task: object, field_name: str = "tasks[0]") -> int:
    """Check a submitted task the fake can run; return the workers its cluster requests."""
    if not isinstance(task, Mapping):
        raise invalid_parameter(f"Invalid value for {field_name}: expected an object")
    if not task.get("task_key"):
        raise invalid_parameter(f"Missing required field: {field_name}.task_key")
    spec = task.get("new_cluster")
    if not isinstance(spec, Mapping):
        raise invalid_parameter(
            f"{field_name}: the fake runs tasks on a new_cluster only "
            "(existing_cluster_id, job_cluster_key and serverless are not supported)."
        )
    workers = requested_workers(spec, f"{field_name}.new_cluster")
    destination = driver_log_root(spec, "") or ""
    if destination and not destination.startswith(("dbfs:/", "/")):
        raise invalid_parameter(
            f"Invalid value for {field_name}.new_cluster.cluster_log_conf.dbfs.destination: "
            f"{destination!r} is not a DBFS path."
        )
    kinds = [kind for kind in TASK_KINDS if kind in task]
    if len(kinds) != 1:
        raise invalid_parameter(
            f"{field_name}: exactly one of {', '.join(TASK_KINDS)} is required by the fake."
        )
    body = task[kinds[0]]
    if not isinstance(body, Mapping):
        raise invalid_parameter(f"Invalid value for {field_name}.{kinds[0]}: expected an object")
    if kinds[0] == "spark_python_task":
        python_file = body.get("python_file", "")
        if not str(python_file).startswith("dbfs:/"):
            raise invalid_parameter(
                f"Invalid value for {field_name}.spark_python_task.python_file: the fake reads "
                f"python files from dbfs:/ only, got {python_file!r}."
            )
    else:
        for required in ("package_name", "entry_point"):
            if not body.get(required):
                raise invalid_parameter(
                    f"Missing required field: {field_name}.python_wheel_task.{required}"
                )
    parameters = body.get("parameters", [])
    if not isinstance(parameters, list) or not all(isinstance(p, str) for p in parameters):
        raise invalid_parameter(f"Invalid value for {field_name}.{kinds[0]}.parameters")
    return workers


def driver_log_root(spec: Mapping[str, Any], cluster_id: str) -> str | None:
    """``<destination>/<cluster_id>/driver`` when DBFS cluster log delivery is configured."""
    destination = spec.get("cluster_log_conf", {}).get("dbfs", {}).get("destination")
    return f"{destination.rstrip('/')}/{cluster_id}/driver" if destination else None


def build_launch(
    task: Mapping[str, Any], dbfs: FakeDbfs, cluster_id: str, root: Path, index: LocalIndex
) -> Launch:
    """The driver command for a validated task, in a new environment in ``root`` with the
    task's libraries installed."""
    environment = install_libraries(task.get("libraries", []), dbfs, cluster_id, root, index)
    python = str(environment.python)
    if "spark_python_task" in task:
        body = task["spark_python_task"]
        local = dbfs.local_path(body["python_file"])
        if not local.is_file():
            raise TaskSetupError(
                f"Cannot read the python file {body['python_file']}. "
                "Please check driver logs for more details.",
                FILE_MISSING,
            )
        return Launch([python, str(local), *body.get("parameters", [])], environment)
    body = task["python_wheel_task"]
    module, attribute = resolve_entry_point(environment, body["package_name"], body["entry_point"])
    arguments = [*body.get("parameters", [])]
    arguments += [f"--{key}={value}" for key, value in body.get("named_parameters", {}).items()]
    argv = [python, "-c", WHEEL_BOOTSTRAP, module, attribute, body["entry_point"]]
    return Launch([*argv, *arguments], environment)


def install_libraries(
    libraries: list[Mapping[str, Any]],
    dbfs: FakeDbfs,
    cluster_id: str,
    root: Path,
    index: LocalIndex,
) -> Environment:
    """A clean environment with the task's ``whl`` and ``pypi`` libraries and their
    dependencies installed (``environment.py``); a missing wheel file, or a dependency that
    cannot be installed, fails like Databricks."""
    wheels, requirements, described = [], [], []
    for library in libraries:
        if "pypi" in library:
            package = str(library["pypi"].get("package", ""))
            requirements.append(package)
            described.append(f'pypi {{\n package: "{package}"\n}}\n')
        uri = library.get("whl")
        if uri is None:
            continue  # maven/jar libraries: nothing a Python driver imports
        described.append(f'whl: "{uri}"')
        local = dbfs.local_path(uri) if uri.startswith("dbfs:/") else None
        if local is None or not local.is_file():
            raise _library_failed(
                described[-1],
                cluster_id,
                f"java.io.FileNotFoundException: {uri} (No such file or directory)",
            )
        wheels.append(local)
    try:
        return create_environment(root, index, wheels, requirements)
    except LibraryError as error:
        pip = ", ".join(["/databricks/python/bin/pip", "install", *map(str, wheels), *requirements])
        raise _library_failed(
            ", ".join(described),
            cluster_id,
            f"org.apache.spark.SparkException: Process List({pip}) exited with code 1. "
            f"{error.detail}",
        ) from None


def _library_failed(library: str, cluster_id: str, error: str) -> TaskSetupError:
    return TaskSetupError(
        f"Library installation failed for library due to user error for {library}\n"
        " Error messages:\nLibrary installation attempted on the driver node of cluster "
        f"{cluster_id} and failed. Please refer to the following error message to fix the "
        "library or contact Databricks support. Error Code: "
        f"DRIVER_LIBRARY_INSTALLATION_FAILURE. Error Message: {error}",
        LIBRARY_FAILED,
    )


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def resolve_entry_point(
    environment: Environment, package_name: str, entry_point: str
) -> tuple[str, str]:
    """(module, attribute) of ``entry_point``: the installed package's console_scripts, else
    ``<package>.<entry_point>`` as Databricks falls back to."""
    dist = environment.distribution(package_name)
    if dist is None:
        raise TaskSetupError(
            f"Python wheel with name {package_name} could not be found. "
            "Please check the driver logs for more details",
            LIBRARY_FAILED,
        )
    for script in dist.entry_points:
        if script.group == "console_scripts" and script.name == entry_point:
            return script.module, script.attr
    return _normalize(package_name), entry_point


def task_environment(
    spec: Mapping[str, Any], *, cluster_id: str, spark_remote: str | None, environment: Environment
) -> dict[str, str]:
    """os.environ + the cluster's spark_env_vars + what a Databricks driver would see, for
    the task's own Python environment."""
    env = {
        **os.environ,
        **{key: str(value) for key, value in spec.get("spark_env_vars", {}).items()},
    }
    if spark_remote:
        env["SPARK_REMOTE"] = spark_remote
    env["DATABRICKS_RUNTIME_VERSION"] = str(spec["spark_version"])
    env.update(DB_CLUSTER_ID=cluster_id, DB_IS_DRIVER="TRUE", DB_IS_JOB_CLUSTER="TRUE")
    env.setdefault("PYTHONUNBUFFERED", "1")  # stream driver logs as they are printed
    return environment.variables(env)
