"""The MLflow model registry as the platform needs it: aliases, versions, signatures, metrics."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import mlflow
import mlflow.lightgbm
import mlflow.models
import mlflow.pyfunc
import mlflow.sklearn
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models.signature import ModelSignature


class ModelNotFoundError(LookupError):
    """The registry has no such model, version or alias."""


@dataclass(frozen=True)
class ModelVersionInfo:
    """One registered model version and what it was trained with."""

    name: str
    version: int
    run_id: str | None
    source: str
    aliases: tuple[str, ...]
    tags: dict[str, str]

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


class ModelRegistry:
    """A thin typed wrapper over ``MlflowClient`` bound to one tracking/registry server."""

    def __init__(self, tracking_uri: str, registry_uri: str | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.registry_uri = registry_uri or tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=self.registry_uri)

    def by_alias(self, name: str, alias: str) -> ModelVersionInfo:
        try:
            return _info(self.client.get_model_version_by_alias(name, alias))
        except MlflowException as error:
            raise ModelNotFoundError(
                f"no version of model {name!r} holds alias {alias!r} in the registry at "
                f"{self.registry_uri}: {error.message}"
            ) from error

    def version(self, name: str, number: int) -> ModelVersionInfo:
        """One version of ``name`` by number."""
        try:
            return _info(self.client.get_model_version(name, str(number)))
        except MlflowException as error:
            raise ModelNotFoundError(
                f"model {name!r} has no version {number} in the registry at "
                f"{self.registry_uri}: {error.message}"
            ) from error

    def versions(self, name: str) -> list[ModelVersionInfo]:
        """All versions of ``name``, newest first."""
        found = self.client.search_model_versions(f"name = '{name}'")
        return sorted((_info(v) for v in found), key=lambda v: v.version, reverse=True)

    def signature(self, version: ModelVersionInfo) -> ModelSignature | None:
        with pointed_at(self):
            return mlflow.models.get_model_info(version.uri).signature

    def flavors(self, version: ModelVersionInfo) -> dict[str, dict]:
        with pointed_at(self):
            return dict(mlflow.models.get_model_info(version.uri).flavors)

    def tag_version(self, name: str, version: int, key: str, value: str) -> None:
        """Set a tag on a model version (MLflow caps tag values at 5,000 characters)."""
        self.client.set_model_version_tag(name, str(version), key, value[:5000])

    def training_metrics(self, version: ModelVersionInfo) -> dict[str, float]:
        if not version.run_id:
            return {}
        return dict(self.client.get_run(version.run_id).data.metrics)


def _info(version: ModelVersion) -> ModelVersionInfo:
    return ModelVersionInfo(
        name=version.name,
        version=int(version.version),
        run_id=version.run_id,
        source=version.source or "",
        aliases=tuple(version.aliases or ()),
        tags=dict(version.tags or {}),
    )


@contextmanager
def pointed_at(registry: ModelRegistry) -> Iterator[None]:
    """Point MLflow's fluent API (model loading and logging) at ``registry`` for a block."""
    previous = (mlflow.get_tracking_uri(), mlflow.get_registry_uri())
    mlflow.set_tracking_uri(registry.tracking_uri)
    mlflow.set_registry_uri(registry.registry_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])
