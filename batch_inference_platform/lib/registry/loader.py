"""Load a registered model version as a ``Scorer``, natively where the flavor allows.

LightGBM and scikit-learn models predict on the float64 matrix directly (no pandas round trip);
any other flavor goes through ``mlflow.pyfunc``. Loaded models are cached per process by
registry and version, so a run over many partitions loads each version once.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import mlflow
import mlflow.lightgbm as mlflow_lightgbm
import mlflow.models
import mlflow.pyfunc
import mlflow.sklearn as mlflow_sklearn
import numpy as np
import pandas as pd

from batch_inference_platform.lib.registry.client import ModelRegistry, ModelVersionInfo, _tracking
from batch_inference_platform.lib.registry.compatibility import input_names


@dataclass
class LoadedScorer:
    """A model version ready to score: its inputs, flavor, and predict function."""

    model_name: str
    model_version: int
    feature_names: Sequence[str]
    flavor: str
    model: Any = field(repr=False)

    def predict(self, features: np.ndarray) -> np.ndarray:
        """The probability of the positive class (or the regression value), one per row."""
        if self.flavor == "lightgbm" and hasattr(self.model, "booster_"):
            return self.model.predict_proba(features)[:, 1]
        if self.flavor == "lightgbm":
            return self.model.predict(features)
        if self.flavor == "sklearn" and hasattr(self.model, "predict_proba"):
            return self.model.predict_proba(features)[:, 1]
        if self.flavor == "sklearn":
            return self.model.predict(features)
        frame = pd.DataFrame(features, columns=pd.Index(self.feature_names))
        output = self.model.predict(frame)
        values = output.to_numpy() if hasattr(output, "to_numpy") else np.asarray(output)
        return values.reshape(len(frame), -1)[:, -1]


_cache: dict[tuple[str, str, int], LoadedScorer] = {}
_lock = threading.Lock()


def load_scorer(registry: ModelRegistry, version: ModelVersionInfo) -> LoadedScorer:
    """The scorer for ``version``, loaded once per process."""
    key = (registry.registry_uri, version.name, version.version)
    with _lock:
        if key not in _cache:
            _cache[key] = _load(registry, version)
        return _cache[key]


def _load(registry: ModelRegistry, version: ModelVersionInfo) -> LoadedScorer:
    signature = registry.signature(version)
    if signature is None:
        raise ValueError(f"{version.uri} has no input signature; it cannot be scored safely")
    flavors = registry.flavors(version)
    with _tracking(registry):
        if "lightgbm" in flavors:
            flavor, model = "lightgbm", mlflow_lightgbm.load_model(version.uri)
        elif "sklearn" in flavors:
            flavor, model = "sklearn", mlflow_sklearn.load_model(version.uri)
        else:
            flavor, model = "pyfunc", mlflow.pyfunc.load_model(version.uri)
    return LoadedScorer(version.name, version.version, input_names(signature), flavor, model)
