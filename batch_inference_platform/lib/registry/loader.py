"""Load a registered model version as a ``Scorer``: compiled where verified, else native.

LightGBM and scikit-learn models predict on the float64 matrix directly (no pandas round trip);
any other flavor goes through ``mlflow.pyfunc``. Tree ensembles are compiled once per version
(``lib.scoring.compiled``) and the compiled predictor serves when its scores match native.
Scorers are cached per process, so a run over many partitions loads each version once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import mlflow.lightgbm as mlflow_lightgbm
import mlflow.models
import mlflow.pyfunc
import mlflow.sklearn as mlflow_sklearn
import numpy as np
import pandas as pd

from batch_inference_platform.lib.registry.client import ModelRegistry, ModelVersionInfo, pointed_at
from batch_inference_platform.lib.registry.compatibility import input_names
from batch_inference_platform.lib.scoring.compiled import CompiledModel, compile_model


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
        if self.flavor in ("sklearn", "xgboost") and hasattr(self.model, "predict_proba"):
            return self.model.predict_proba(features)[:, 1]
        if self.flavor == "xgboost":
            import xgboost

            return self.model.predict(xgboost.DMatrix(features))
        if self.flavor == "sklearn":
            return self.model.predict(features)
        frame = pd.DataFrame(features, columns=pd.Index(self.feature_names))
        output = self.model.predict(frame)
        values = output.to_numpy() if hasattr(output, "to_numpy") else np.asarray(output)
        return values.reshape(len(frame), -1)[:, -1]


@dataclass
class FastScorer:
    """The scorer runs use: the verified compiled predictor if there is one, else native."""

    native: LoadedScorer
    compiled: CompiledModel

    @property
    def model_name(self) -> str:
        return self.native.model_name

    @property
    def model_version(self) -> int:
        return self.native.model_version

    @property
    def feature_names(self) -> Sequence[str]:
        return self.native.feature_names

    @property
    def engine(self) -> str:
        """``lleaves``/``tl2cgen`` when compiled, else ``native-<flavor>``."""
        if self.compiled.predict is not None:
            return self.compiled.manifest.engine
        return f"native-{self.native.flavor}"

    @property
    def batch_rows(self) -> int:
        return self.compiled.manifest.batch_rows

    def predict(self, features: np.ndarray) -> np.ndarray:
        predict = self.compiled.predict or self.native.predict
        return predict(features)


_native: dict[tuple[str, str, int], LoadedScorer] = {}
_fast: dict[tuple[str, str, int, str], FastScorer] = {}
_lock = threading.Lock()


def load_scorer(registry: ModelRegistry, version: ModelVersionInfo) -> LoadedScorer:
    """The native scorer for ``version``, loaded once per process."""
    key = (registry.registry_uri, version.name, version.version)
    with _lock:
        if key not in _native:
            _native[key] = _load(registry, version)
        return _native[key]


def load_fast_scorer(
    registry: ModelRegistry,
    version: ModelVersionInfo,
    *,
    cache_root: Path,
    sample: Callable[[], np.ndarray],
) -> FastScorer:
    """The fastest verified scorer for ``version``, compiled into ``cache_root`` if needed.

    ``sample`` gives feature rows to verify a fresh compilation on; it is only called when the
    version is not yet in the on-disk cache.
    """
    key = (registry.registry_uri, version.name, version.version, str(cache_root))
    with _lock:
        if key in _fast:
            return _fast[key]
    native = load_scorer(registry, version)
    compiled = compile_model(
        flavor=native.flavor,
        model=native.model,
        native_predict=native.predict,
        sample=sample,
        cache_root=cache_root,
        key=f"{version.name}/v{version.version}",
    )
    scorer = FastScorer(native, compiled)
    with _lock:
        return _fast.setdefault(key, scorer)


def _load(registry: ModelRegistry, version: ModelVersionInfo) -> LoadedScorer:
    signature = registry.signature(version)
    if signature is None:
        raise ValueError(f"{version.uri} has no input signature; it cannot be scored safely")
    flavors = registry.flavors(version)
    with pointed_at(registry):
        if "lightgbm" in flavors:
            flavor, model = "lightgbm", mlflow_lightgbm.load_model(version.uri)
        elif "xgboost" in flavors:
            import mlflow.xgboost as mlflow_xgboost

            flavor, model = "xgboost", mlflow_xgboost.load_model(version.uri)
        elif "sklearn" in flavors:
            flavor, model = "sklearn", mlflow_sklearn.load_model(version.uri)
        else:
            flavor, model = "pyfunc", mlflow.pyfunc.load_model(version.uri)
    return LoadedScorer(version.name, version.version, input_names(signature), flavor, model)
