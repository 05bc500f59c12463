"""How clients name a model: ``name@alias`` (whatever holds the alias) or ``name/version``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from batch_inference_platform.lib.registry.client import ModelRegistry, ModelVersionInfo

_REFERENCE = re.compile(
    r"(?P<name>[A-Za-z0-9][A-Za-z0-9_.\-]{0,127})(?:@(?P<alias>[A-Za-z][A-Za-z0-9_\-]{0,63})"
    r"|/(?P<version>[1-9][0-9]{0,8}))"
)


class ModelReferenceError(ValueError):
    """A model reference that is neither ``name@alias`` nor ``name/version``."""


@dataclass(frozen=True)
class ModelReference:
    """A parsed reference: exactly one of ``alias`` and ``version`` is set."""

    name: str
    alias: str | None = None
    version: int | None = None

    def resolve(self, registry: ModelRegistry) -> ModelVersionInfo:
        """The registered version the reference names now (an alias may move)."""
        if self.version is not None:
            return registry.version(self.name, self.version)
        assert self.alias is not None
        return registry.by_alias(self.name, self.alias)

    def __str__(self) -> str:
        return f"{self.name}@{self.alias}" if self.alias else f"{self.name}/{self.version}"


def parse_model_reference(text: str) -> ModelReference:
    """Parse ``name@alias`` or ``name/version``; anything else is a ``ModelReferenceError``."""
    match = _REFERENCE.fullmatch(text)
    if match is None:
        raise ModelReferenceError(
            f"model {text!r} must be 'name@alias' (e.g. credit_risk_default@champion) or "
            "'name/version' (e.g. credit_risk_default/3)"
        )
    version = match["version"]
    return ModelReference(match["name"], match["alias"], int(version) if version else None)
