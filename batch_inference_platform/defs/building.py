"""The one way settings reach Dagster objects: ``build_definitions(settings)`` builds everything
inside ``building_with(settings)``; components read them with ``current_settings()``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from batch_inference_platform.config import Settings

_SETTINGS: ContextVar[Settings | None] = ContextVar("batch_inference_settings", default=None)


@contextmanager
def building_with(settings: Settings) -> Iterator[None]:
    """Build definitions (components included) for ``settings``."""
    token = _SETTINGS.set(settings)
    try:
        yield
    finally:
        _SETTINGS.reset(token)


def current_settings() -> Settings:
    """The settings the definitions being built are for."""
    settings = _SETTINGS.get()
    if settings is None:
        raise RuntimeError(
            "ScoringDeployment components are built by "
            "batch_inference_platform.definitions.build_definitions(settings); load the code "
            "location (batch_inference_platform.definitions), not the defs folder alone"
        )
    return settings
