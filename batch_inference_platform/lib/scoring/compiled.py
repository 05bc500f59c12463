"""Compiled tree ensembles: scores equal to the model library's, several times faster.

LightGBM boosters compile through lleaves (LLVM); scikit-learn tree ensembles and XGBoost
boosters through treelite + tl2cgen (generated C, gcc). A model is compiled once per model
version and content hash into an on-disk cache that every later run and process reuses.
Before a compiled model is trusted, its scores on a sample are compared with the native
model's; beyond ``TOLERANCE`` it is not used.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

TOLERANCE = 1e-9
"""Largest absolute score difference from the native model that a compiled model may show."""

BATCH_CANDIDATES = (65_536, 131_072, 262_144)
"""Batch sizes tried when measuring which one the compiled model scores fastest. Smaller batches
predict marginally faster alone but lose more to per-batch overhead in the read/score/write
pipeline (benchmarks: 16K rows/batch was 10-25% slower end to end than 64K)."""
DEFAULT_BATCH_ROWS = BATCH_CANDIDATES[0]

Predict = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Manifest:
    """What the cache knows about one compiled model version (``manifest.json``)."""

    engine: str
    """``lleaves`` or ``tl2cgen``; ``native`` when compilation was refused."""
    verified: bool
    reason: str
    compile_seconds: float
    max_abs_diff: float | None
    batch_rows: int


@dataclass(frozen=True)
class CompiledModel:
    """A verified compiled predictor, or the reason the native model is used instead."""

    manifest: Manifest
    predict: Predict | None
    cache_dir: Path
    from_cache: bool


def model_fingerprint(flavor: str, model: Any) -> str:
    """A content hash of the model: the same trees give the same cache entry."""
    if flavor == "lightgbm":
        booster = getattr(model, "booster_", model)
        payload = booster.model_to_string().encode()
    elif flavor == "xgboost":
        payload = bytes(_xgboost_booster(model).save_raw(raw_format="ubj"))
    else:
        payload = pickle.dumps(model, protocol=5)
    return hashlib.sha256(payload).hexdigest()[:16]


def compiler_for(flavor: str, model: Any) -> str | None:
    """Which compiler handles this model, or None when it cannot be compiled."""
    if flavor == "lightgbm":
        return "lleaves"
    if flavor == "sklearn" and _is_sklearn_tree_ensemble(model):
        return "tl2cgen"
    if flavor == "xgboost":
        return "tl2cgen"
    return None


def compile_model(
    *,
    flavor: str,
    model: Any,
    native_predict: Predict,
    sample: Callable[[], np.ndarray],
    cache_root: Path,
    key: str,
    threads: int | None = None,
) -> CompiledModel:
    """The compiled predictor for ``model``, from the cache or compiled (and verified) now.

    ``key`` names the model version (e.g. ``credit_risk_default/v3``); the cache entry is
    ``cache_root/key-<fingerprint>``. ``sample()`` gives the rows both predictors score when a
    fresh compilation is verified; it is not called on a cache hit.
    """
    threads = threads or os.cpu_count() or 1
    compiler = compiler_for(flavor, model)
    if compiler is None:
        reason = f"no compiler for flavor {flavor!r} ({type(model).__name__}); native predict"
        manifest = Manifest("native", False, reason, 0.0, None, DEFAULT_BATCH_ROWS)
        return CompiledModel(manifest, None, cache_root, from_cache=False)
    entry = cache_root / f"{key}-{model_fingerprint(flavor, model)}"
    if (entry / "manifest.json").exists():
        manifest = Manifest(**json.loads((entry / "manifest.json").read_text()))
        predictor = _load(manifest.engine, entry, threads) if manifest.verified else None
        return CompiledModel(manifest, predictor, entry, from_cache=True)

    staging = Path(tempfile.mkdtemp(prefix=".compiling-", dir=_ensure(entry.parent)))
    started = time.perf_counter()
    try:
        _compile(compiler, model, staging, threads)
        predictor = _load(compiler, staging, threads)
        seconds = time.perf_counter() - started
        rows = np.ascontiguousarray(sample(), dtype=np.float64)
        if len(rows) == 0:
            raise ValueError("no sample rows to verify the compiled model on")
        diff = float(np.max(np.abs(predictor(rows) - native_predict(rows)), initial=0.0))
        if not diff <= TOLERANCE:
            reason = f"{compiler} scores differ from native by {diff:.3g} (> {TOLERANCE:g})"
            manifest = Manifest(compiler, False, reason, seconds, diff, DEFAULT_BATCH_ROWS)
            shutil.rmtree(staging, ignore_errors=True)
            return _store(entry, manifest, None)
        batch_rows = fastest_batch_rows(predictor, rows)
        reason = f"{compiler} verified on {len(rows)} rows (max |diff| {diff:.1g})"
        manifest = Manifest(compiler, True, reason, seconds, diff, batch_rows)
        (staging / "manifest.json").write_text(json.dumps(asdict(manifest)))
        _publish(staging, entry)
        return CompiledModel(manifest, _load(compiler, entry, threads), entry, from_cache=False)
    except Exception as error:  # a failed compile leaves the native model serving, and says why
        # Not cached: a missing toolchain or package is fixed by installing it, not by a purge.
        shutil.rmtree(staging, ignore_errors=True)
        reason = f"{compiler} compilation failed: {type(error).__name__}: {error}"
        manifest = Manifest(compiler, False, reason, 0.0, None, DEFAULT_BATCH_ROWS)
        return CompiledModel(manifest, None, entry, from_cache=False)


def fastest_batch_rows(predict: Predict, sample: np.ndarray) -> int:
    """The candidate batch size with the highest measured rows/s on a tiled sample."""
    best, best_rate = BATCH_CANDIDATES[0], 0.0
    for rows in BATCH_CANDIDATES:
        batch = np.ascontiguousarray(np.resize(sample, (rows, sample.shape[1])))
        predict(batch)  # warm
        started = time.perf_counter()
        predict(batch)
        rate = rows / max(time.perf_counter() - started, 1e-9)
        if rate > best_rate * 1.05:  # prefer smaller batches (less memory) unless clearly faster
            best, best_rate = rows, rate
    return best


def _compile(compiler: str, model: Any, directory: Path, threads: int) -> None:
    if compiler == "lleaves":
        import lleaves

        booster = getattr(model, "booster_", model)
        booster.save_model(str(directory / "model.txt"))
        lleaves.Model(model_file=str(directory / "model.txt")).compile(
            cache=str(directory / "model.so")
        )
        return
    import tl2cgen
    import treelite

    if _is_sklearn_tree_ensemble(model):
        tree_model = treelite.sklearn.import_model(model)
    else:
        tree_model = treelite.frontend.from_xgboost(_xgboost_booster(model))
    tl2cgen.export_lib(
        tree_model,
        toolchain="gcc",
        libpath=str(directory / "model.so"),
        params={"parallel_comp": max(threads, 2), "quantize": 1},
        nthread=threads,
    )


def _load(engine: str, directory: Path, threads: int) -> Predict:
    if engine == "lleaves":
        import lleaves

        model = lleaves.Model(model_file=str(directory / "model.txt"))
        model.compile(cache=str(directory / "model.so"))
        return lambda features: model.predict(features, n_jobs=threads)
    import tl2cgen

    predictor = tl2cgen.Predictor(str(directory / "model.so"), nthread=threads)

    def predict(features: np.ndarray) -> np.ndarray:
        scores = np.asarray(predictor.predict(tl2cgen.DMatrix(features, dtype="float64")))
        return scores.reshape(len(features), -1)[:, -1]

    return predict


def _store(entry: Path, manifest: Manifest, predict: Predict | None) -> CompiledModel:
    """Record a refusal too, so the next run does not pay for the same failed attempt."""
    staging = Path(tempfile.mkdtemp(prefix=".compiling-", dir=_ensure(entry.parent)))
    (staging / "manifest.json").write_text(json.dumps(asdict(manifest)))
    _publish(staging, entry)
    return CompiledModel(manifest, predict, entry, from_cache=False)


def _publish(staging: Path, entry: Path) -> None:
    """Move a finished cache entry into place atomically; a concurrent winner is kept."""
    try:
        staging.rename(entry)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)


def _ensure(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _xgboost_booster(model: Any) -> Any:
    """The ``xgboost.Booster`` of a booster or of a scikit-learn-API XGBoost model."""
    return model.get_booster() if hasattr(model, "get_booster") else model


def _is_sklearn_tree_ensemble(model: Any) -> bool:
    from sklearn.ensemble import (
        ExtraTreesClassifier,
        ExtraTreesRegressor,
        GradientBoostingClassifier,
        GradientBoostingRegressor,
        HistGradientBoostingClassifier,
        HistGradientBoostingRegressor,
        RandomForestClassifier,
        RandomForestRegressor,
    )

    return isinstance(
        model,
        (
            ExtraTreesClassifier,
            ExtraTreesRegressor,
            GradientBoostingClassifier,
            GradientBoostingRegressor,
            HistGradientBoostingClassifier,
            HistGradientBoostingRegressor,
            RandomForestClassifier,
            RandomForestRegressor,
        ),
    )
