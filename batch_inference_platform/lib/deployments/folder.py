"""The deployments folder read without Dagster (for the HTTP service and the CLI): every
``<name>/defs.yaml`` of type ScoringDeployment, validated by the same schema."""

from __future__ import annotations

from pathlib import Path

import pydantic
import yaml

from batch_inference_platform.lib.deployments.spec import Deployment, DeploymentSpec

COMPONENT_TYPE = "batch_inference_platform.components.ScoringDeployment"
DEFAULT_FOLDER = Path(__file__).resolve().parents[2] / "defs" / "deployments"
"""Where the code location loads its deployments from."""


class DeploymentFileError(ValueError):
    """A defs.yaml that is not a valid ScoringDeployment, naming the file and the field."""


def read_deployments(
    project_root: Path, folder: str | Path = "", *, lake_root: str | None = None
) -> dict[str, Deployment]:
    """Every deployment in ``folder`` (default: the package's) by name, its tables located
    (``lake://`` under ``lake_root``, paths under ``project_root``)."""
    folder = Path(folder) if folder else DEFAULT_FOLDER
    found: dict[str, Deployment] = {}
    for path in sorted(folder.rglob("defs.yaml")):
        try:
            document = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise DeploymentFileError(f"{path}: not YAML: {error}") from None
        if not isinstance(document, dict):
            raise DeploymentFileError(f"{path}: a defs.yaml holds one mapping (type, attributes)")
        if document.get("type") != COMPONENT_TYPE:
            continue
        try:
            spec = DeploymentSpec.model_validate(document.get("attributes") or {})
        except pydantic.ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'attributes'}: {e['msg']}"
                for e in error.errors()
            )
            raise DeploymentFileError(f"{path}: {problems}") from None
        if spec.name in found:
            raise DeploymentFileError(f"{path}: name: {spec.name!r} is declared twice")
        found[spec.name] = spec.resolve(project_root, lake_root)
    return found
