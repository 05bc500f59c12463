"""Load a registered model version as a ``Scorer``: its inputs from the signature, its output
bound to the declared kind, compiled where verified.

A version's artifacts are downloaded once per process and hashed (the compile cache's key, the
same for every serialization format: native files, skops, cloudpickle), then loaded through
the flavor's MLflow loader: LightGBM, XGBoost and scikit-learn natively (a float64 matrix when
every input is numeric and the model takes one, else a typed DataFrame), anything else through
``mlflow.pyfunc`` (a typed DataFrame). Single-score tree ensembles on a matrix are compiled once
per version (``lib.scoring.compiled``) and serve when their scores match native.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import mlflow.artifacts
import mlflow.lightgbm as mlflow_lightgbm
import mlflow.pyfunc
import mlflow.sklearn as mlflow_sklearn
import numpy as np
import pyarrow as pa

from batch_inference_platform.lib.registry.adapters import ModelShape, bind_output, model_shape
from batch_inference_platform.lib.registry.client import ModelRegistry, ModelVersionInfo, pointed_at
from batch_inference_platform.lib.scoring.compiled import (
    DEFAULT_BATCH_ROWS,
    CompiledModel,
    Manifest,
    artifact_fingerprint,
    compile_model,
    compiler_for,
)
from batch_inference_platform.lib.scoring.inputs import (
    InputPlan,
    ModelInput,
    UnsupportedSignatureError,
    plan_inputs,
)
from batch_inference_platform.lib.scoring.outputs import OutputKind, OutputSpec, class_column

Sample = Callable[[], Iterable[pa.RecordBatch]]
"""Validated batches to bind a model's output on (pyfunc) and verify a fresh compilation on."""


@dataclass
class LoadedModel:
    """A model version loaded once per process: flavor, native model, inputs and output shape."""

    name: str
    version: int
    flavor: str
    model: Any = field(repr=False)
    inputs: InputPlan
    shape: ModelShape
    fingerprint: str
    """Content hash of the version's artifacts."""


@dataclass
class ServingScorer:
    """A loaded version bound to an output kind: the scorer the kernel calls."""

    loaded: LoadedModel
    output: OutputSpec
    native_predict: Callable[[ModelInput], Any] = field(repr=False)
    compiled: CompiledModel

    @property
    def model_name(self) -> str:
        return self.loaded.name

    @property
    def model_version(self) -> int:
        return self.loaded.version

    @property
    def inputs(self) -> InputPlan:
        return self.loaded.inputs

    @property
    def engine(self) -> str:
        """``lleaves``/``tl2cgen`` when compiled, else ``native-<flavor>``."""
        if self.compiled.predict is not None:
            return self.compiled.manifest.engine
        return f"native-{self.loaded.flavor}"

    @property
    def batch_rows(self) -> int:
        return self.compiled.manifest.batch_rows

    def predict(self, model_input: ModelInput) -> Any:
        """The bound output for a prepared input (see ``OutputSpec.arrays`` for its shape)."""
        if self.compiled.predict is not None and isinstance(model_input, np.ndarray):
            return self.compiled.predict(model_input)
        return self.native_predict(model_input)


_loaded: dict[tuple[Any, ...], LoadedModel] = {}
_serving: dict[tuple[Any, ...], ServingScorer] = {}
_locks: dict[tuple[Any, ...], threading.Lock] = {}
_lock = threading.Lock()


def _lock_for(key: tuple[Any, ...]) -> threading.Lock:
    """One lock per cache entry: loading one version never blocks another's lookup."""
    with _lock:
        return _locks.setdefault(key, threading.Lock())


def load_model(registry: ModelRegistry, version: ModelVersionInfo) -> LoadedModel:
    """``version`` loaded natively, once per process (keyed by its artifacts' source, so a
    re-created model name never gets an old version's model)."""
    key = (registry.registry_uri, version.name, version.version, version.source)
    with _lock_for(key):
        if key not in _loaded:
            _loaded[key] = _load(registry, version)
        return _loaded[key]


def load_scorer(
    registry: ModelRegistry,
    version: ModelVersionInfo,
    output: OutputSpec,
    sample: Sample,
    *,
    cache_root: Path | None = None,
) -> ServingScorer:
    """``version`` bound to ``output`` (its kind and positive class), compiled into
    ``cache_root`` when given and possible. Raises ``OutputMismatchError`` when the model's
    output does not fit the kind. ``sample`` is only read when needed (binding a pyfunc's
    output, verifying a fresh compilation)."""
    key = (registry.registry_uri, version.name, version.version, output.kind, output.positive_class)
    key = (*key, version.source, str(cache_root))
    with _lock_for(key):
        if key not in _serving:
            _serving[key] = bind(
                load_model(registry, version), output, sample, cache_root=cache_root
            )
        return _serving[key]


def bind(
    loaded: LoadedModel, output: OutputSpec, sample: Sample, *, cache_root: Path | None = None
) -> ServingScorer:
    """``loaded`` bound to ``output``, compiled into ``cache_root`` when given and possible."""
    samples: list[ModelInput] = []

    def sample_input() -> ModelInput:
        if not samples:
            samples.append(loaded.inputs.sample(sample()))
        return samples[0]

    bound, predict = bind_output(loaded.shape, output.kind, output.positive_class, sample_input)
    compiled = _compiled(loaded, bound, predict, sample_input, cache_root)
    return ServingScorer(loaded, bound, predict, compiled)


def _compiled(
    loaded: LoadedModel,
    output: OutputSpec,
    predict: Callable[[ModelInput], Any],
    sample: Callable[[], ModelInput],
    cache_root: Path | None,
) -> CompiledModel:
    reason = _not_compiled(loaded, output, cache_root)
    if reason is not None or cache_root is None:
        manifest = Manifest("native", False, reason or "", 0.0, None, DEFAULT_BATCH_ROWS)
        return CompiledModel(manifest, None, cache_root or Path(), from_cache=False)
    suffix = output.kind.value
    if output.kind is OutputKind.PROBABILITY:
        suffix = class_column(output.positive_class).replace("score", "probability", 1)
    return compile_model(
        flavor=loaded.flavor,
        model=loaded.model,
        native_predict=lambda rows: np.asarray(predict(rows), np.float64),
        sample=lambda: np.asarray(sample()),
        cache_root=cache_root,
        key=f"{loaded.name}/v{loaded.version}/{suffix}",
        fingerprint=loaded.fingerprint,
    )


def _not_compiled(loaded: LoadedModel, output: OutputSpec, cache_root: Path | None) -> str | None:
    """Why ``loaded`` is not compiled for ``output`` (None: try to compile it)."""
    if cache_root is None:
        return "not compiled for this use (no compile cache)"
    if not loaded.inputs.matrix:
        return (
            "the model takes a DataFrame (non-numeric inputs, or a flavor that selects columns "
            "by name); native predict"
        )
    if output.kind not in (OutputKind.PROBABILITY, OutputKind.VALUE):
        return f"compiled predictors serve one score per row, not {output.kind}; native predict"
    if compiler_for(loaded.flavor, loaded.model) is None:
        return f"no compiler for {type(loaded.model).__name__} ({loaded.flavor}); native predict"
    return None


def _load(registry: ModelRegistry, version: ModelVersionInfo) -> LoadedModel:
    signature = registry.signature(version)
    flavors = registry.flavors(version)
    local = Path(tempfile.mkdtemp(prefix="model-"))
    with pointed_at(registry):
        path = mlflow.artifacts.download_artifacts(artifact_uri=version.uri, dst_path=str(local))
    fingerprint = artifact_fingerprint(Path(path))
    keep_files = False
    try:
        if "lightgbm" in flavors:
            flavor, model = "lightgbm", mlflow_lightgbm.load_model(path)
        elif "xgboost" in flavors:
            import mlflow.xgboost as mlflow_xgboost

            flavor, model = "xgboost", mlflow_xgboost.load_model(path)
        elif "sklearn" in flavors:
            flavor, model = "sklearn", mlflow_sklearn.load_model(path)
        else:
            # A pyfunc may read its artifacts while it predicts: its files stay.
            flavor, model, keep_files = "pyfunc", mlflow.pyfunc.load_model(path), True
    finally:
        if not keep_files:
            shutil.rmtree(local, ignore_errors=True)
    inputs = _as_fitted(
        flavor, model, plan_inputs(signature, takes_matrix=_takes_matrix(flavor, model))
    )
    shape = model_shape(flavor, model)
    return LoadedModel(version.name, version.version, flavor, model, inputs, shape, fingerprint)


def _as_fitted(flavor: str, model: Any, plan: InputPlan) -> InputPlan:
    """``plan`` with its columns in the order the model was fit on (by name, when the model
    knows its features' names), and LightGBM's pandas categoricals handed over as such."""
    fitted = _feature_names(flavor, model)
    declared = set(plan.names)
    if fitted and set(fitted) <= declared:
        plan = plan.ordered(fitted)
    elif fitted and set(fitted) & declared:
        raise UnsupportedSignatureError(
            f"the model was fit on features {fitted}, its signature declares {plan.names}: "
            "log it with a signature inferred from the training columns"
        )
    booster = getattr(model, "booster_", model) if flavor == "lightgbm" else None
    categories = getattr(booster, "pandas_categorical", None) if booster is not None else None
    if not categories:
        return plan
    names = booster.feature_name()  # type: ignore[union-attr]
    header = booster.model_to_string(num_iteration=1)  # type: ignore[union-attr]
    found = re.search(r"^\[categorical_feature: ([0-9,]*)\]$", header, re.MULTILINE)
    indices = [int(i) for i in found.group(1).split(",") if i] if found else []
    if len(indices) != len(categories):
        raise UnsupportedSignatureError(
            f"LightGBM model with {len(categories)} pandas categoricals whose columns cannot be "
            "told from the model file"
        )
    return replace(plan, matrix=False, categorical=tuple(names[i] for i in indices))


def _feature_names(flavor: str, model: Any) -> list[str]:
    """The feature names the model was fit on, in order (empty when it does not know them)."""
    if flavor == "lightgbm":
        return list(getattr(model, "booster_", model).feature_name())
    if flavor == "xgboost":
        booster = model.get_booster() if hasattr(model, "get_booster") else model
        return list(booster.feature_names or [])
    names = getattr(model, "feature_names_in_", None)
    return [str(name) for name in names] if names is not None else []


def _takes_matrix(flavor: str, model: Any) -> bool:
    """Whether the model scores a bare float64 matrix correctly: boosters and tree ensembles
    do; scikit-learn pipelines and estimators fit on named columns may select by name."""
    if flavor in ("lightgbm", "xgboost"):
        return True
    if flavor == "sklearn":
        return compiler_for(flavor, model) is not None or not hasattr(model, "feature_names_in_")
    return False
