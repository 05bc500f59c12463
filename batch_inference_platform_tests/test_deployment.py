"""The deployment files agree with the code: the Dagster+ location loads the module the
project declares, the dg project's component folder is the deployments folder the code location
loads, and every path the Dockerfile copies exists."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def test_the_dagster_plus_location_is_the_projects_module() -> None:
    cloud = yaml.safe_load((REPO / "dagster_cloud.yaml").read_text())
    (location,) = cloud["locations"]
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["dagster"]
    assert location["code_source"]["module_name"] == project["module_name"]
    assert location["location_name"] == project["code_location_name"]
    env = location["container_context"]["k8s"]["env_vars"]
    assert all("TOKEN=" not in v and "PASSWORD=" not in v and "SECRET=" not in v for v in env)


def test_the_dg_project_is_the_code_location_and_its_deployments() -> None:
    """``dg list defs`` / ``dg check yaml`` see what the code location loads: its module and
    the folder of ScoringDeployment components (one ``<name>/defs.yaml`` each)."""
    from batch_inference_platform.definitions import DEPLOYMENTS_MODULE
    from batch_inference_platform.lib.deployments.folder import COMPONENT_TYPE, DEFAULT_FOLDER

    tool = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]
    project = tool["dg"]["project"]
    assert project["code_location_target_module"] == tool["dagster"]["module_name"]
    assert project["code_location_name"] == tool["dagster"]["code_location_name"]
    assert project["defs_module"] == DEPLOYMENTS_MODULE
    folder = REPO / Path(*DEPLOYMENTS_MODULE.split("."))
    assert folder == DEFAULT_FOLDER
    files = sorted(folder.glob("*/defs.yaml"))
    assert [f.parent.name for f in files] == ["churn", "credit_risk"]
    for file in files:
        document = yaml.safe_load(file.read_text())
        assert document["type"] == COMPONENT_TYPE
        assert document["attributes"]["name"] == file.parent.name


def test_every_path_the_dockerfile_copies_exists() -> None:
    copies = re.findall(r"^COPY (.+) \S+$", (REPO / "Dockerfile").read_text(), re.MULTILINE)
    sources = [s for line in copies for s in line.split()]
    assert sources and all((REPO / s).exists() for s in sources), sources


def test_the_wheel_ships_every_deployment(tmp_path: Path) -> None:
    """The image and the Databricks wheel load the deployments from the installed package."""
    import zipfile

    from batch_inference_platform.lib.databricks.artifact import build_wheel
    from batch_inference_platform.lib.deployments.folder import DEFAULT_FOLDER

    wheel = build_wheel(tmp_path)
    shipped = set(zipfile.ZipFile(wheel).namelist())
    package = DEFAULT_FOLDER.parents[1]
    declared = sorted(DEFAULT_FOLDER.glob("*/defs.yaml"))
    assert len(declared) >= 2
    for path in declared:
        assert f"batch_inference_platform/{path.relative_to(package).as_posix()}" in shipped
