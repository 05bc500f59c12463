"""``ScoringDeployment``: one use case of the platform, declared in a ``defs.yaml``.

The YAML schema is ``lib.deployments.spec.DeploymentSpec``; Dagster validates it when the defs
folder loads (an unknown or mistyped field names the file and the field). What only the data
can tell - the table exists, the keys are in it, the contract fits the model - is checked by
``build_defs``, which fails the load naming the file and the field.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from batch_inference_platform.defs.building import current_settings
from batch_inference_platform.defs.deployment_graph import build_deployment_defs
from batch_inference_platform.defs.deployment_checks import check_deployment
from batch_inference_platform.lib.deployments.spec import DeploymentSpec


class ScoringDeployment(DeploymentSpec, dg.Component, dg.Resolvable):
    """A feature table scored by a registered model: the asset group ``<name>`` with its
    feature, validation, model, prediction and catalog assets, checks, jobs, schedule and
    promotion sensor."""

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        settings = current_settings()
        source = Path(context.path) / "defs.yaml"
        deployment = self.resolve(settings.project_root)
        check_deployment(deployment, self, settings, source)
        return build_deployment_defs(deployment, settings)
