"""Which model version serves: the alias holder if it passes, else the newest earlier that does."""

from __future__ import annotations

import itertools
from collections.abc import Callable
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


Probe = Callable[[ModelVersionInfo], list[str]]
"""A further test of a version whose signature fits: the reasons it may not serve, if any."""


class NoCompatibleVersionError(LookupError):
    """Neither the alias holder nor any earlier version fits the validated schema."""


def resolve_serving_version(
    registry: ModelRegistry,
    name: str,
    alias: str,
    schema: pa.Schema,
    probe: Probe | None = None,
) -> Resolution:
    """Resolve ``models:/name@alias``; a holder that does not fit ``schema`` or fails ``probe``
    (the smoke test) is passed over for the newest earlier version that passes both."""
    holder = registry.by_alias(name, alias)
    earlier = (v for v in registry.versions(name) if v.version < holder.version)
    rejected: dict[int, list[str]] = {}
    for candidate in itertools.chain([holder], earlier):
        problems = signature_problems(registry.signature(candidate), schema)
        if not problems and probe is not None:
            problems = probe(candidate)
        if not problems:
            return Resolution(candidate, holder, alias, rejected)
        rejected[candidate.version] = problems
    details = "; ".join(f"v{v}: {', '.join(p)}" for v, p in rejected.items())
    raise NoCompatibleVersionError(
        f"model {name!r}: alias {alias!r} points at v{holder.version} and no version up to it "
        f"fits the validated feature schema and passes the smoke test ({details})"
    )


__all__ = [
    "ModelNotFoundError",
    "NoCompatibleVersionError",
    "Probe",
    "Resolution",
    "resolve_serving_version",
]
