"""Which model version serves: the alias holder if it fits the data, else the newest that does."""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

from batch_inference_platform.lib.registry.client import (
    ModelNotFoundError,
    ModelRegistry,
    ModelVersionInfo,
)
from batch_inference_platform.lib.registry.compatibility import signature_problems


@dataclass(frozen=True)
class Resolution:
    """The serving decision: the version to use, the alias holder, and why they differ."""

    serving: ModelVersionInfo
    alias_holder: ModelVersionInfo
    alias: str
    rejected: dict[int, list[str]] = field(default_factory=dict)
    """Versions passed over (alias holder first), each with the reasons it does not fit."""

    @property
    def fell_back(self) -> bool:
        return self.serving.version != self.alias_holder.version


class NoCompatibleVersionError(LookupError):
    """Neither the alias holder nor any earlier version fits the validated schema."""


def resolve_serving_version(
    registry: ModelRegistry, name: str, alias: str, schema: pa.Schema
) -> Resolution:
    """Resolve ``models:/name@alias`` and fall back to the newest earlier compatible version."""
    holder = registry.by_alias(name, alias)
    rejected: dict[int, list[str]] = {}
    problems = signature_problems(registry.signature(holder), schema)
    if not problems:
        return Resolution(serving=holder, alias_holder=holder, alias=alias)
    rejected[holder.version] = problems
    for candidate in registry.versions(name):
        if candidate.version >= holder.version:
            continue
        problems = signature_problems(registry.signature(candidate), schema)
        if not problems:
            return Resolution(candidate, holder, alias, rejected)
        rejected[candidate.version] = problems
    details = "; ".join(f"v{v}: {', '.join(p)}" for v, p in rejected.items())
    raise NoCompatibleVersionError(
        f"model {name!r}: alias {alias!r} points at v{holder.version} and no version up to it "
        f"fits the validated feature schema ({details})"
    )


__all__ = [
    "ModelNotFoundError",
    "NoCompatibleVersionError",
    "Resolution",
    "resolve_serving_version",
]
