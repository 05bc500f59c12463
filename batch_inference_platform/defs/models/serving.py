"""The model version a run scores with, as passed from ``model_versions`` to ``predictions``."""

from __future__ import annotations

from dataclasses import dataclass

from batch_inference_platform.lib.registry.client import ModelVersionInfo
from batch_inference_platform.lib.scoring.outputs import OutputSpec

OUTCOME_TAG = "bip/outcome"
"""What a promotion's run did: ``scored vN``, or ``superseded by vM`` (nothing scored)."""
SCORED_VERSION_TAG = "bip/scored_model_version"
"""The version whose predictions the run wrote."""


@dataclass(frozen=True)
class ServingModel:
    """The resolved version, and the alias holder it replaces when the holder did not fit."""

    version: ModelVersionInfo
    alias: str
    alias_holder_version: int
    output: OutputSpec
    """The declared output kind bound to the version's classes."""
    requested_version: int | None = None
    """The version a promotion's run was requested for (None: the alias holder)."""
    promotion: str | None = None
    """The promotion the run was requested for, if any."""

    @property
    def fell_back(self) -> bool:
        return self.version.version != self.alias_holder_version
