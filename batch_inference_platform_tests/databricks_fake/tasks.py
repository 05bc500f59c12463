"""Turning a submitted task into a local driver command: validation, wheels, environment."""

from __future__ import annotations

import configparser
import importlib.metadata
import os
import re
import sys
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .clusters import requested_workers
from .dbfs import FakeDbfs
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
    """How to start a task's driver: the command and what goes first on PYTHONPATH."""

    argv: list[str]
    pythonpath: list[str]


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


def build_launch(task: Mapping[str, Any], dbfs: FakeDbfs, cluster_id: str) -> Launch:
    """The driver command for a validated task, with its wheels "installed"."""
    if "spark_python_task" in task:
        body = task["spark_python_task"]
        local = dbfs.local_path(body["python_file"])
        if not local.is_file():
            raise TaskSetupError(
                f"Cannot read the python file {body['python_file']}. "
                "Please check driver logs for more details.",
                FILE_MISSING,
            )
        return Launch([sys.executable, str(local), *body.get("parameters", [])], [])
    body = task["python_wheel_task"]
    wheels = install_wheels(task.get("libraries", []), dbfs, cluster_id)
    module, attribute = resolve_entry_point(wheels, body["package_name"], body["entry_point"])
    arguments = [*body.get("parameters", [])]
    arguments += [f"--{key}={value}" for key, value in body.get("named_parameters", {}).items()]
    argv = [sys.executable, "-c", WHEEL_BOOTSTRAP, module, attribute, body["entry_point"]]
    return Launch([*argv, *arguments], [str(wheel) for wheel in wheels])


def install_wheels(
    libraries: list[Mapping[str, Any]], dbfs: FakeDbfs, cluster_id: str
) -> list[Path]:
    """The local files of the task's ``whl`` libraries; a missing one fails like Databricks."""
    wheels = []
    for library in libraries:
        uri = library.get("whl")
        if uri is None:
            continue  # pypi/maven/jar libraries: the venv stands for the cluster's runtime.
        local = dbfs.local_path(uri) if uri.startswith("dbfs:/") else None
        if local is None or not local.is_file():
            raise TaskSetupError(
                f'Library installation failed for library due to user error for whl: "{uri}"\n'
                " Error messages:\nLibrary installation attempted on the driver node of cluster "
                f"{cluster_id} and failed. Please refer to the following error message to fix the "
                "library or contact Databricks support. Error Code: "
                "DRIVER_LIBRARY_INSTALLATION_FAILURE. Error Message: "
                f"java.io.FileNotFoundException: {uri} (No such file or directory)",
                LIBRARY_FAILED,
            )
        wheels.append(local)
    return wheels


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def resolve_entry_point(wheels: list[Path], package_name: str, entry_point: str) -> tuple[str, str]:
    """(module, attribute) of ``entry_point``: the package's console_scripts, else
    ``<package>.<entry_point>`` as Databricks falls back to."""
    for wheel in wheels:
        if _normalize(wheel.name.split("-")[0]) != _normalize(package_name):
            continue
        with zipfile.ZipFile(wheel) as archive:
            for name in archive.namelist():
                if name.endswith(".dist-info/entry_points.txt"):
                    found = _console_script(archive.read(name).decode(), entry_point)
                    if found is not None:
                        return found
        return _normalize(package_name), entry_point
    try:
        scripts = importlib.metadata.distribution(package_name).entry_points
    except importlib.metadata.PackageNotFoundError:
        raise TaskSetupError(
            f"Python wheel with name {package_name} could not be found. "
            "Please check the driver logs for more details",
            LIBRARY_FAILED,
        ) from None
    for script in scripts:
        if script.group == "console_scripts" and script.name == entry_point:
            return script.module, script.attr
    return _normalize(package_name), entry_point


def _console_script(text: str, entry_point: str) -> tuple[str, str] | None:
    parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
    parser.optionxform = str  # type: ignore[assignment]  # entry point names are case-sensitive
    parser.read_string(text)
    if not parser.has_option("console_scripts", entry_point):
        return None
    target = parser.get("console_scripts", entry_point).split("[")[0].strip()
    module, _, attribute = target.partition(":")
    return module.strip(), attribute.strip()


def task_environment(
    spec: Mapping[str, Any], *, cluster_id: str, spark_remote: str | None, pythonpath: list[str]
) -> dict[str, str]:
    """os.environ + the cluster's spark_env_vars + what a Databricks driver would see."""
    env = {
        **os.environ,
        **{key: str(value) for key, value in spec.get("spark_env_vars", {}).items()},
    }
    if spark_remote:
        env["SPARK_REMOTE"] = spark_remote
    env["DATABRICKS_RUNTIME_VERSION"] = str(spec["spark_version"])
    env.update(DB_CLUSTER_ID=cluster_id, DB_IS_DRIVER="TRUE", DB_IS_JOB_CLUSTER="TRUE")
    env.setdefault("PYTHONUNBUFFERED", "1")  # stream driver logs as they are printed
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([*pythonpath, *filter(None, [env.get("PYTHONPATH")])])
    return env
