"""``ScoringDeployment``: one use case of the platform, declared in a ``defs.yaml``.

The YAML schema is ``lib.deployments.spec.DeploymentSpec`` (strict: an unknown or mistyped
field fails the load naming the file, the line and the field). What only the data can tell -
the table exists, the keys are in it, the contract fits the model - is checked by
``build_defs``, which fails the load the same way, never a run.
"""

from __future__ import annotations

from typing import Any

import dagster as dg
from pydantic import BaseModel

from batch_inference_platform.defs.building import current_settings
from batch_inference_platform.defs.deployment_checks import check_deployment
from batch_inference_platform.defs.deployment_graph import build_deployment_defs
from batch_inference_platform.lib.deployments.spec import DeploymentSpec


class ScoringDeployment(dg.Component):
    """A feature table scored by a registered model: the asset group ``<name>`` with its
    feature, validation, model, prediction and catalog assets, checks, jobs, schedule and
    promotion sensor."""

    def __init__(self, spec: DeploymentSpec, positions: Any = None) -> None:
        self.spec = spec
        self._positions = positions

    @classmethod
    def get_model_cls(cls) -> type[BaseModel]:
        return DeploymentSpec

    @classmethod
    def load(cls, attributes: Any, context: dg.ComponentLoadContext) -> ScoringDeployment:
        if attributes is None:
            raise ValueError(f"{context.path / 'defs.yaml'}: attributes: required")
        return cls(attributes, context.resolution_context.source_position_tree)

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        settings = current_settings()
        deployment = self.spec.resolve(settings.project_root, settings.application.lake.root)
        fallback = context.path / "defs.yaml"
        check_deployment(deployment, self.spec, settings, lambda field: self._at(field, fallback))
        return build_deployment_defs(deployment, settings)

    def _at(self, field: str, fallback: Any) -> str:
        """``file:line: attributes.<field>`` for a dotted field path of the YAML."""
        path = ["attributes", *(int(p) if p.isdigit() else p for p in _split(field))]
        where = str(fallback)
        if self._positions is not None:
            where = str(self._positions.lookup_closest_and_path(path, None)[0])
        return f"{where}: attributes.{field}"


def _split(field: str) -> list[str]:
    """``contract.columns[2].name`` -> ``["contract", "columns", "2", "name"]``."""
    return field.replace("[", ".").replace("]", "").split(".")
