"""``registry``: the MLflow tracking server and model registry."""

from pathlib import Path

import dagster as dg

from batch_inference_platform.lib.registry.client import ModelRegistry, ModelVersionInfo
from batch_inference_platform.lib.registry.loader import Sample, ServingScorer, load_scorer
from batch_inference_platform.lib.scoring.outputs import OutputSpec


class ModelRegistryResource(dg.ConfigurableResource):
    """The MLflow tracking server and model registry (each deployment names its model)."""

    tracking_uri: str
    registry_uri: str = ""
    artifact_root: str
    experiment: str
    model_cache_dir: str
    """Where compiled models are cached (shared by every run and process on the machine)."""
    max_load_seconds: float = 300.0
    """A version that takes longer to load is refused (the smoke test)."""
    ui_url: str = ""
    """The MLflow UI people open (links in the Dagster UI); empty: the tracking URI when it
    is served over HTTP, else no links."""

    @property
    def registry(self) -> ModelRegistry:
        return ModelRegistry(self.tracking_uri, self.registry_uri or None)

    def scorer(
        self,
        version: ModelVersionInfo,
        sample: Sample,
        output: OutputSpec,
    ) -> ServingScorer:
        """The version's scorer bound to the declared output: compiled and verified once, then
        reused from the cache. Raises ``OutputMismatchError`` when the output does not fit."""
        return load_scorer(
            self.registry,
            version,
            output,
            sample,
            cache_root=Path(self.model_cache_dir),
        )

    @property
    def ui(self) -> str | None:
        """The MLflow UI's base URL, if there is one to link to."""
        if self.ui_url:
            return self.ui_url.rstrip("/")
        if self.tracking_uri.startswith(("http://", "https://")):
            return self.tracking_uri.rstrip("/")
        return None

    def link(self, version: ModelVersionInfo) -> str:
        """Where a person finds the version: its page in the MLflow UI, else its URI."""
        if self.ui is None:
            return version.uri
        return f"{self.ui}/#/models/{version.name}/versions/{version.version}"

    def run_link(self, run_id: str) -> str:
        """Where a person finds an MLflow run: its page in the MLflow UI, else its id."""
        if self.ui is None or not run_id:
            return run_id
        try:
            experiment = self.registry.client.get_run(run_id).info.experiment_id
        except Exception:  # a link is never worth failing a step: deleted run, outage, ...
            return run_id
        return f"{self.ui}/#/experiments/{experiment}/runs/{run_id}"
