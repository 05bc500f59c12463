"""The deployment files agree with the code: the Dagster+ location loads the module the
project declares, and every path the Dockerfile copies exists."""

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


def test_every_path_the_dockerfile_copies_exists() -> None:
    copies = re.findall(r"^COPY (.+) \S+$", (REPO / "Dockerfile").read_text(), re.MULTILINE)
    sources = [s for line in copies for s in line.split()]
    assert sources and all((REPO / s).exists() for s in sources), sources
