"""Which model version serves: the alias holder if it passes, else the last approved champion.

The *last approved champion* is the version that most recently served successfully (recorded
on the version as ``SERVED_TAG`` when its predictions commit). A version that never served -
never promoted, or never passed - is never a fallback.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa

from batch_inference_platform.lib.registry.client import (
    ModelNotFoundError,
    ModelRegistry,
    ModelVersionInfo,
)
from batch_inference_platform.lib.registry.compatibility import signature_problems

SERVED_TAG = "batch_inference.served_at"
"""Set on a version (UTC ISO time) each time its predictions commit for the serving alias."""


@dataclass(frozen=True)
class Resolution:
    """The serving decision: the version to use, the alias holder, and why they differ."""

    serving: ModelVersionInfo
    alias_holder: ModelVersionInfo
    alias: str
    rejected: dict[int, list[str]] = field(default_factory=dict)
    """Versions passed over (alias holder first), each with the reasons it may not serve."""

    @property
    def fell_back(self) -> bool:
        return self.serving.version != self.alias_holder.version

    @property
    def reason(self) -> str:
        """Why this version serves, in a sentence for the run log."""
        if not self.fell_back:
            return f"v{self.serving.version} holds alias {self.alias!r} and passes validation"
        served = self.serving.tags.get(SERVED_TAG, "?")
        return (
            f"v{self.serving.version} serves as the last approved champion (last served "
            f"{served}) because the alias holder v{self.alias_holder.version} was refused"
        )


Probe = Callable[[ModelVersionInfo], list[str]]
"""A further test of a version whose signature fits: the reasons it may not serve, if any."""


class NoCompatibleVersionError(LookupError):
    """Neither the alias holder nor any earlier approved champion passes."""

    def __init__(self, message: str, rejected: dict[int, list[str]]) -> None:
        super().__init__(message)
        self.rejected = rejected


def resolve_serving_version(
    registry: ModelRegistry,
    name: str,
    alias: str,
    schema: pa.Schema,
    probe: Probe | None = None,
) -> Resolution:
    """Resolve ``models:/name@alias``; a holder that does not fit ``schema`` or fails ``probe``
    (the smoke test) is passed over for the approved champions that served before it, most
    recently served first. Any error while checking a version refuses that version only."""
    holder = registry.by_alias(name, alias)
    rejected: dict[int, list[str]] = {}
    for candidate in [holder, *approved_champions(registry, name, exclude=holder.version)]:
        try:
            problems = signature_problems(registry.signature(candidate), schema)
            if not problems and probe is not None:
                problems = probe(candidate)
        except Exception as error:  # a broken version is refused; the search goes on
            problems = [f"could not be checked: {type(error).__name__}: {error}"[:500]]
        if not problems:
            return Resolution(candidate, holder, alias, rejected)
        rejected[candidate.version] = problems
    details = "; ".join(f"v{v}: {', '.join(p)}" for v, p in rejected.items())
    fallbacks = [v for v in rejected if v != holder.version]
    raise NoCompatibleVersionError(
        f"model {name!r}: alias {alias!r} points at v{holder.version}, which was refused, and "
        + (
            "no earlier approved champion passes"
            if fallbacks
            else "no version has served before it (no approved champion to fall back to)"
        )
        + f" ({details})",
        rejected,
    )


def approved_champions(
    registry: ModelRegistry, name: str, *, exclude: int | None = None
) -> list[ModelVersionInfo]:
    """Versions of ``name`` that have served, most recently served first."""
    served = [v for v in registry.versions(name) if SERVED_TAG in v.tags and v.version != exclude]
    return sorted(served, key=lambda v: v.tags[SERVED_TAG], reverse=True)


def record_served(registry: ModelRegistry, version: ModelVersionInfo) -> None:
    """Record that ``version`` served successfully (it becomes the approved fallback)."""
    now = dt.datetime.now(dt.UTC).isoformat(timespec="microseconds")
    registry.tag_version(version.name, version.version, SERVED_TAG, now)


__all__ = [
    "SERVED_TAG",
    "ModelNotFoundError",
    "NoCompatibleVersionError",
    "Probe",
    "Resolution",
    "approved_champions",
    "record_served",
    "resolve_serving_version",
]
