"""Test platforms whose demo source tables are their own.

A deployment's ``source.table`` is relative to the project root (``data/lake/features/...``
in the repository), not to the lake root a test platform moves into its tmp dir: without this,
every platform - and every concurrently running test session - generates into the same
source table, and its Delta versions (which lineage and the catalog record) are anyone's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .conftest import CREDIT, Platform, PlatformFactory, write_deployment


def own_platform(
    make_platform: PlatformFactory,
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    deployment: dict[str, Any] | None = None,
    **overrides: str,
) -> Platform:
    """``make_platform(name, ...)`` with credit_risk's source table in a tmp dir of its own
    (``deployment`` changes further attributes, as ``make_platform`` takes them)."""
    changes = dict(deployment or {})
    changes["source"] = {
        "table": _source(tmp_path_factory, name, CREDIT),
        **changes.get("source", {}),
    }
    return make_platform(name, deployment=changes, **overrides)


def own_deployments(
    tmp_path_factory: pytest.TempPathFactory, name: str, deployments: tuple[str, ...]
) -> Path:
    """A deployments folder holding the package's ``deployments`` unchanged except that each
    source table lies in a tmp dir of its own (pass it as ``DEPLOYMENTS_DIR``)."""
    folder = tmp_path_factory.mktemp(f"{name}_deployments")
    for deployment in deployments:
        write_deployment(
            folder, deployment, {"source": {"table": _source(tmp_path_factory, name, deployment)}}
        )
    return folder


def _source(tmp_path_factory: pytest.TempPathFactory, name: str, deployment: str) -> str:
    return str(tmp_path_factory.mktemp(f"{name}_sources") / deployment)
