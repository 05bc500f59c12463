"""The model version a run scores with, as passed from ``model_versions`` to ``predictions``."""

from __future__ import annotations

from dataclasses import dataclass

from batch_inference_platform.lib.registry.client import ModelVersionInfo
from batch_inference_platform.lib.scoring.outputs import OutputSpec


@dataclass(frozen=True)
class ServingModel:
    """The resolved version, and the alias holder it replaces when the holder did not fit."""

    version: ModelVersionInfo
    alias: str
    alias_holder_version: int
    output: OutputSpec
    """The declared output kind bound to the version's classes."""

    @property
    def fell_back(self) -> bool:
        return self.version.version != self.alias_holder_version
