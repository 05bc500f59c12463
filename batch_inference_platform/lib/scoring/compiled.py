"""Compiled tree ensembles: scores equal to the model library's, several times faster.

LightGBM boosters compile through lleaves (LLVM); scikit-learn tree ensembles and XGBoost
boosters through treelite + tl2cgen (generated C, gcc). A model is compiled once per model
version and artifact hash (``artifact_fingerprint``) into an on-disk cache that every later
run and process reuses. Before a compiled model is trusted, its scores on a sample are compared
with the native model's; beyond ``TOLERANCE`` it is not used.

XGBoost predicts in float32: features are rounded to float32, the intercept and the trees'
leaves are summed in float32 in tree order starting from the intercept, and the sigmoid is
``1 / (1 + expf(-margin))``. Its compiled predictor reproduces exactly that (see
``_xgboost_tree_model``), so its scores equal XGBoost's own, not merely XGBoost's to 1e-7.
"""

from __future__ import annotations

import hashlib
import json
import os
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
    """A verified compiled predictor, or the reason the native model is used instead.

    One object may serve many runs: processes keep loaded scorers (``lib/registry/loader.py``),
    so a run whose step started after the compile was served by this process's cache.
    ``served_from_cache(since)`` and ``compile_seconds_now(since)`` say what a use that began at
    ``since`` paid; ``manifest.compile_seconds`` is the original compile's, whenever it was.
    """

    manifest: Manifest
    predict: Predict | None
    cache_dir: Path
    from_cache: bool
    """The entry was found in the on-disk cache when this object was made."""
    compiled_at: float | None = None
    """``time.perf_counter()`` when this process started compiling it (None: it did not)."""

    def served_from_cache(self, since: float) -> bool:
        """Whether a use that began at ``since`` (a ``time.perf_counter()`` reading, e.g. a
        step's start) found the model compiled: on disk, or by this process before ``since``.
        False for a model compiled (or refused) since then, for one never compiled, and for
        one that scores natively (no compiled predictor was served)."""
        if self.predict is None:
            return False
        if self.from_cache:
            return True
        return self.compiled_at is not None and self.compiled_at < since

    def compile_seconds_now(self, since: float) -> float:
        """Seconds a use that began at ``since`` spent compiling: the manifest's when this
        process compiled the model since then, else 0 (a cache served it, or none was tried)."""
        if self.compiled_at is None or self.compiled_at < since:
            return 0.0
        return self.manifest.compile_seconds


_CHUNK_BYTES = 1 << 20


def artifact_fingerprint(directory: Path) -> str:
    """A content hash of a model's artifact files: the same files give the same cache entry.

    sha256 (first 16 hex digits) over every regular file under ``directory``, in sorted
    relative-path order: each file's relative path, its size and its bytes. Timestamps,
    permissions and where the directory lives do not count, so every process that downloads
    the same registered model gets the same fingerprint.
    """
    if not directory.is_dir():
        raise NotADirectoryError(f"not a directory: {directory}")
    files = sorted(
        (path.relative_to(directory).as_posix(), path)
        for path in directory.rglob("*")
        if path.is_file()
    )
    if not files:
        raise ValueError(f"no files under {directory} to fingerprint")
    digest = hashlib.sha256()
    for relative, path in files:
        digest.update(relative.encode() + b"\0")
        digest.update(path.stat().st_size.to_bytes(8, "big"))
        with path.open("rb") as stream:
            while chunk := stream.read(_CHUNK_BYTES):
                digest.update(chunk)
    return digest.hexdigest()[:16]


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
    fingerprint: str,
    threads: int | None = None,
) -> CompiledModel:
    """The compiled predictor for ``model``, from the cache or compiled (and verified) now.

    ``key`` names the model version (e.g. ``credit_risk_default/v3``) and ``fingerprint`` its
    content (``artifact_fingerprint`` of the registered artifact); the cache entry is
    ``cache_root/key-<fingerprint>``. ``sample()`` gives the rows both predictors score when a
    fresh compilation is verified; it is not called on a cache hit.
    """
    if not fingerprint.isalnum():
        raise ValueError(f"fingerprint must be a non-empty hex digest, not {fingerprint!r}")
    threads = threads or os.cpu_count() or 1
    compiler = compiler_for(flavor, model)
    if compiler is None:
        reason = f"no compiler for flavor {flavor!r} ({type(model).__name__}); native predict"
        manifest = Manifest("native", False, reason, 0.0, None, DEFAULT_BATCH_ROWS)
        return CompiledModel(manifest, None, cache_root, from_cache=False)
    entry = cache_root / f"{key}-{fingerprint}"
    if (entry / "manifest.json").exists():
        manifest = Manifest(**json.loads((entry / "manifest.json").read_text()))
        try:
            predictor = _load(manifest.engine, entry, threads) if manifest.verified else None
        except Exception as error:  # a damaged cache entry: native serves, and says why
            reason = f"cached {manifest.engine} model at {entry} does not load ({error}); native"
            broken = Manifest("native", False, reason, 0.0, None, DEFAULT_BATCH_ROWS)
            return CompiledModel(broken, None, entry, from_cache=True)
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
            return _store(entry, manifest, None, compiled_at=started)
        batch_rows = fastest_batch_rows(predictor, rows)
        reason = f"{compiler} verified on {len(rows)} rows (max |diff| {diff:.1g})"
        manifest = Manifest(compiler, True, reason, seconds, diff, batch_rows)
        (staging / "manifest.json").write_text(json.dumps(asdict(manifest)))
        _publish(staging, entry)
        predictor = _load(compiler, entry, threads)
        return CompiledModel(manifest, predictor, entry, from_cache=False, compiled_at=started)
    except Exception as error:  # a failed compile leaves the native model serving, and says why
        # Not cached: a missing toolchain or package is fixed by installing it, not by a purge.
        shutil.rmtree(staging, ignore_errors=True)
        reason = f"{compiler} compilation failed: {type(error).__name__}: {error}"
        manifest = Manifest(compiler, False, reason, 0.0, None, DEFAULT_BATCH_ROWS)
        return CompiledModel(manifest, None, entry, from_cache=False, compiled_at=started)


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

    params: dict[str, Any] = {"parallel_comp": max(threads, 2)}
    options: list[str] = []
    if _is_sklearn_tree_ensemble(model):
        tree_model = treelite.sklearn.import_model(model)
        # Float64 thresholds are written with 17 digits, so binning features is exact.
        params["quantize"] = 1
    else:
        tree_model = _xgboost_tree_model(model)
        # No ``quantize``: tl2cgen writes the float32 threshold table it bins with in 8
        # significant digits, which moves some thresholds (e.g. 27 of 3961 in a 200-tree
        # model) and sends features equal to or next to them down the wrong branch.
        # Float constants: ``result += -0.12360742;`` then adds the float32 leaf in float32 as
        # XGBoost does, not its decimal in double rounded back to float32 (which differs in
        # the last bit in a third of the rows of a 200-tree model).
        options.append("-fsingle-precision-constant")
    tl2cgen.export_lib(
        tree_model,
        toolchain="gcc",
        libpath=str(directory / "model.so"),
        params=params,
        options=options,
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
    if predictor.threshold_type == "float32":  # XGBoost: scored in XGBoost's own precision

        def predict_float32(features: np.ndarray) -> np.ndarray:
            rows = np.ascontiguousarray(features, dtype=np.float32)
            scores = predictor.predict(tl2cgen.DMatrix(rows, dtype="float32"))
            return np.asarray(scores, np.float32).reshape(len(rows)).astype(np.float64)

        return predict_float32

    def predict(features: np.ndarray) -> np.ndarray:
        rows = np.ascontiguousarray(features, dtype=np.float64)
        scores = np.asarray(predictor.predict(tl2cgen.DMatrix(rows, dtype="float64")))
        return scores.reshape(len(rows), -1)[:, -1]

    return predict


def _store(
    entry: Path, manifest: Manifest, predict: Predict | None, *, compiled_at: float
) -> CompiledModel:
    """Record a refusal too, so the next run does not pay for the same failed attempt."""
    staging = Path(tempfile.mkdtemp(prefix=".compiling-", dir=_ensure(entry.parent)))
    (staging / "manifest.json").write_text(json.dumps(asdict(manifest)))
    _publish(staging, entry)
    return CompiledModel(manifest, predict, entry, from_cache=False, compiled_at=compiled_at)


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


def _xgboost_tree_model(model: Any) -> Any:
    """The treelite model of an XGBoost model, summing its scores in XGBoost's order.

    XGBoost starts every row at the intercept (its ``base_score`` through the objective's
    link, in float32) and adds tree after tree in float32; treelite adds the intercept after
    the trees, which rounds differently in a third to half of the rows. So the intercept, as
    XGBoost computes it, is folded into the first tree's leaves (``fl32(intercept + leaf)``,
    exactly XGBoost's sum after one tree) and treelite's own intercept is set to zero.
    """
    import treelite

    booster = _xgboost_booster(model)
    learner = json.loads(booster.save_config())["learner"]
    objective = learner["objective"]["name"]
    if learner["gradient_booster"]["name"] != "gbtree":
        raise ValueError(f"XGBoost booster {learner['gradient_booster']['name']!r} not compiled")
    if objective != "binary:logistic" and not objective.startswith("reg:"):
        raise ValueError(f"XGBoost objective {objective!r} not compiled")
    tree_model = treelite.frontend.from_xgboost(booster)
    header = tree_model.get_header_accessor()
    if list(header.get_field("num_target")) != [1] or list(header.get_field("num_class")) != [1]:
        raise ValueError("XGBoost models with more than one output are not compiled")
    if tree_model.num_tree == 0:
        raise ValueError("the XGBoost model has no trees")
    first = tree_model.get_tree_accessor(0)
    # ``get_field`` returns a view of the model's own buffer, and ``set_field`` frees that
    # buffer before copying from the array it is given: setting a field from its own view
    # copies freed memory (malloc's free-list pointers over the first 16 bytes, i.e. the
    # first four nodes' leaves). Hence the copy, and the read-back check.
    leaf_value = np.array(first.get_field("leaf_value"), copy=True)
    if leaf_value.dtype != np.float32 or len(first.get_field("leaf_vector")):
        raise ValueError("the XGBoost model does not have float32 scalar leaves")
    is_leaf = first.get_field("cleft") == -1
    leaf_value[is_leaf] = leaf_value[is_leaf] + _xgboost_intercept(booster)
    first.set_field("leaf_value", leaf_value)
    if not np.array_equal(first.get_field("leaf_value"), leaf_value):
        raise ValueError("treelite did not keep the first tree's leaves with the intercept")
    base_scores = header.get_field("base_scores")
    header.set_field("base_scores", np.zeros_like(base_scores))
    return tree_model


def _xgboost_intercept(booster: Any) -> np.float32:
    """The intercept in margin space exactly as XGBoost computes it (its link, in float32):
    the margin XGBoost predicts for a copy of the model whose leaves are all zero."""
    import xgboost

    document = json.loads(bytes(booster.save_raw(raw_format="json")))
    for tree in document["learner"]["gradient_booster"]["model"]["trees"]:
        tree["split_conditions"] = [
            0.0 if left == -1 else condition
            for left, condition in zip(tree["left_children"], tree["split_conditions"], strict=True)
        ]
        tree["base_weights"] = [0.0] * len(tree["base_weights"])
    zeroed = xgboost.Booster(model_file=bytearray(json.dumps(document).encode()))
    row = xgboost.DMatrix(np.full((1, booster.num_features()), np.nan, dtype=np.float32))
    return np.float32(zeroed.predict(row, output_margin=True)[0])


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
