"""Compiled tree ensembles with the real compilers (lleaves, treelite + tl2cgen), no mocks.

A compiled model must score exactly like the model library (within ``TOLERANCE``), be compiled
once per model content and reused from the on-disk cache - also by another process - and be
refused (native scoring) when its scores disagree or no compiler exists. Through the graph, the
platform scores with lleaves and the prediction table equals LightGBM's own predictions.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import mlflow
import mlflow.lightgbm as mlflow_lightgbm
import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from batch_inference_platform.lib.features.contract import KEY_COLUMN
from batch_inference_platform.lib.registry.loader import FastScorer, LoadedScorer
from batch_inference_platform.lib.scoring.compiled import (
    BATCH_CANDIDATES,
    TOLERANCE,
    CompiledModel,
    compile_model,
    fastest_batch_rows,
    model_fingerprint,
)
from batch_inference_platform.lib.scoring.kernel import SCORE_COLUMN, feature_matrix

from .conftest import DAY_A, Platform, PlatformFactory, materializations, read_day

FEATURES = 30
KEY = "credit_risk_test/v1"


def _lgb(booster: lgb.Booster) -> Callable[[np.ndarray], np.ndarray]:
    """LightGBM's own predict, typed as the dense score vector it returns here."""
    return lambda features: np.asarray(booster.predict(features), np.float64)


def _no_sample() -> np.ndarray:
    raise AssertionError("sample() must not be called on a cache hit")


@dataclass(frozen=True)
class Data:
    train: np.ndarray
    labels: np.ndarray
    fresh: np.ndarray
    """Rows neither the model nor the verification saw, with some NaNs (missing values)."""


@pytest.fixture(scope="module")
def data() -> Data:
    rng = np.random.default_rng(11)
    train = rng.normal(size=(2000, FEATURES))
    labels = (train[:, 0] + 0.5 * train[:, 1] + rng.normal(size=2000) > 0).astype(np.int32)
    fresh = rng.normal(size=(1500, FEATURES))
    fresh[::9, 2] = np.nan
    fresh[::13, 0] = np.nan
    return Data(train, labels, fresh)


def _train_booster(data: Data, num_leaves: int = 15) -> lgb.Booster:
    return lgb.train(
        {
            "objective": "binary",
            "num_leaves": num_leaves,
            "verbose": -1,
            "num_threads": 1,
            "seed": 3,
            "deterministic": True,
        },
        lgb.Dataset(data.train, data.labels),
        num_boost_round=20,
    )


@pytest.fixture(scope="module")
def booster(data: Data) -> lgb.Booster:
    return _train_booster(data)


def _compile_lightgbm(
    booster: lgb.Booster,
    cache_root: Path,
    sample: Callable[[], np.ndarray],
    native_predict: Callable[[np.ndarray], np.ndarray] | None = None,
) -> CompiledModel:
    return compile_model(
        flavor="lightgbm",
        model=booster,
        native_predict=native_predict or _lgb(booster),
        sample=sample,
        cache_root=cache_root,
        key=KEY,
    )


@dataclass(frozen=True)
class LightGBMCompiled:
    cache_root: Path
    first: CompiledModel
    second: CompiledModel


@pytest.fixture(scope="module")
def lightgbm_compiled(
    booster: lgb.Booster, data: Data, tmp_path_factory: pytest.TempPathFactory
) -> LightGBMCompiled:
    cache_root = tmp_path_factory.mktemp("lleaves_cache")
    first = _compile_lightgbm(booster, cache_root, lambda: data.train[:1000])
    second = _compile_lightgbm(booster, cache_root, _no_sample)
    return LightGBMCompiled(cache_root, first, second)


# --------------------------------------------------------------------------- LightGBM / lleaves


def test_lightgbm_compiles_with_lleaves_and_scores_like_lightgbm(
    lightgbm_compiled: LightGBMCompiled, booster: lgb.Booster, data: Data
) -> None:
    compiled = lightgbm_compiled.first
    manifest = compiled.manifest
    assert manifest.engine == "lleaves"
    assert manifest.verified is True
    assert "verified on 1000 rows" in manifest.reason
    assert manifest.max_abs_diff is not None and manifest.max_abs_diff <= TOLERANCE
    assert manifest.compile_seconds > 0
    assert manifest.batch_rows in BATCH_CANDIDATES
    assert compiled.from_cache is False
    assert compiled.predict is not None
    scores = compiled.predict(data.fresh)
    assert scores.shape == (len(data.fresh),)
    np.testing.assert_allclose(scores, _lgb(booster)(data.fresh), rtol=0, atol=TOLERANCE)


def test_cache_layout_is_name_version_fingerprint(
    lightgbm_compiled: LightGBMCompiled, booster: lgb.Booster
) -> None:
    entry = lightgbm_compiled.first.cache_dir
    fingerprint = model_fingerprint("lightgbm", booster)
    assert entry == lightgbm_compiled.cache_root / "credit_risk_test" / f"v1-{fingerprint}"
    assert {p.name for p in entry.iterdir()} == {"manifest.json", "model.txt", "model.so"}
    stored = json.loads((entry / "manifest.json").read_text())
    assert stored["engine"] == "lleaves" and stored["verified"] is True
    # Nothing half-written is left next to the entry.
    assert [p.name for p in entry.parent.iterdir()] == [entry.name]


def test_second_compile_is_served_from_the_cache_without_sampling(
    lightgbm_compiled: LightGBMCompiled, booster: lgb.Booster, data: Data
) -> None:
    first, second = lightgbm_compiled.first, lightgbm_compiled.second
    assert second.from_cache is True
    assert second.cache_dir == first.cache_dir
    assert second.manifest == first.manifest
    assert second.predict is not None
    np.testing.assert_allclose(
        second.predict(data.fresh), _lgb(booster)(data.fresh), rtol=0, atol=TOLERANCE
    )


def test_another_process_reuses_the_cache(
    lightgbm_compiled: LightGBMCompiled, booster: lgb.Booster, data: Data, tmp_path: Path
) -> None:
    entry = lightgbm_compiled.first.cache_dir
    library = entry / "model.so"
    before = library.stat()
    model_file = tmp_path / "booster.txt"
    booster.save_model(str(model_file))
    rows_file = tmp_path / "rows.npy"
    np.save(rows_file, data.fresh)
    script = textwrap.dedent(
        f"""
        import json, time
        from pathlib import Path
        import lightgbm, lleaves, numpy as np
        from batch_inference_platform.lib.scoring.compiled import compile_model

        def sample():
            raise AssertionError("sample() called: the cache was not used")

        booster = lightgbm.Booster(model_file={str(model_file)!r})
        started = time.perf_counter()
        compiled = compile_model(
            flavor="lightgbm", model=booster, native_predict=booster.predict, sample=sample,
            cache_root=Path({str(lightgbm_compiled.cache_root)!r}), key={KEY!r},
        )
        seconds = time.perf_counter() - started
        rows = np.load({str(rows_file)!r})
        print(json.dumps({{
            "from_cache": compiled.from_cache,
            "engine": compiled.manifest.engine,
            "verified": compiled.manifest.verified,
            "cache_dir": str(compiled.cache_dir),
            "seconds": seconds,
            "scores": compiled.predict(rows).tolist(),
        }}))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["from_cache"] is True
    assert (out["engine"], out["verified"]) == ("lleaves", True)
    assert out["cache_dir"] == str(entry)
    # Loading the cached shared library takes milliseconds; compiling would rewrite it.
    assert out["seconds"] < 1.0, out["seconds"]
    after = library.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    np.testing.assert_allclose(
        np.asarray(out["scores"]), _lgb(booster)(data.fresh), rtol=0, atol=TOLERANCE
    )


def test_a_retrained_model_gets_its_own_cache_entry(
    lightgbm_compiled: LightGBMCompiled, data: Data
) -> None:
    """Same key (name/version), different trees: the stale entry is not served."""
    other = _train_booster(data, num_leaves=7)
    compiled = _compile_lightgbm(other, lightgbm_compiled.cache_root, lambda: data.train[:500])
    assert compiled.from_cache is False
    assert compiled.cache_dir != lightgbm_compiled.first.cache_dir
    assert compiled.cache_dir.parent == lightgbm_compiled.first.cache_dir.parent
    assert compiled.predict is not None
    np.testing.assert_allclose(
        compiled.predict(data.fresh), _lgb(other)(data.fresh), rtol=0, atol=TOLERANCE
    )


# --------------------------------------------------------------------------- refusals


def test_disagreeing_scores_are_refused_and_the_refusal_is_cached(
    booster: lgb.Booster, data: Data, tmp_path: Path
) -> None:
    def off_by_a_little(features: np.ndarray) -> np.ndarray:
        return _lgb(booster)(features) + 1e-6

    refused = _compile_lightgbm(booster, tmp_path, lambda: data.train[:500], off_by_a_little)
    assert refused.manifest.engine == "lleaves"
    assert refused.manifest.verified is False
    assert refused.predict is None
    assert refused.from_cache is False
    assert "differ" in refused.manifest.reason
    assert refused.manifest.max_abs_diff == pytest.approx(1e-6, rel=1e-3)
    # Only the verdict is kept, not the refused library.
    assert {p.name for p in refused.cache_dir.iterdir()} == {"manifest.json"}

    again = _compile_lightgbm(booster, tmp_path, _no_sample, off_by_a_little)
    assert again.from_cache is True
    assert again.manifest.verified is False
    assert again.predict is None
    assert again.manifest == refused.manifest

    native = LoadedScorer(
        "credit_risk_test", 1, [f"f{i}" for i in range(FEATURES)], "lightgbm", booster
    )
    scorer = FastScorer(native, again)
    assert scorer.engine == "native-lightgbm"
    np.testing.assert_array_equal(scorer.predict(data.fresh), _lgb(booster)(data.fresh))


def test_a_model_without_compiler_scores_natively(data: Data, tmp_path: Path) -> None:
    model = LogisticRegression(max_iter=200).fit(data.train, data.labels)

    def native_predict(features: np.ndarray) -> np.ndarray:
        return model.predict_proba(features)[:, 1]

    compiled = compile_model(
        flavor="sklearn",
        model=model,
        native_predict=native_predict,
        sample=_no_sample,  # nothing to verify: no compilation happens
        cache_root=tmp_path,
        key=KEY,
    )
    assert compiled.manifest.engine == "native"
    assert compiled.manifest.verified is False
    assert compiled.predict is None
    assert "no compiler" in compiled.manifest.reason
    assert "LogisticRegression" in compiled.manifest.reason

    native = LoadedScorer(
        "credit_risk_test", 1, [f"f{i}" for i in range(FEATURES)], "sklearn", model
    )
    scorer = FastScorer(native, compiled)
    assert scorer.engine == "native-sklearn"
    assert scorer.batch_rows in BATCH_CANDIDATES
    rows = np.nan_to_num(data.fresh)  # LogisticRegression does not take NaN
    np.testing.assert_array_equal(scorer.predict(rows), native_predict(rows))


class _UnpicklableModel:
    """Like many ``mlflow.pyfunc`` models once loaded: holds state that cannot be pickled."""

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def predict(self, features: np.ndarray) -> np.ndarray:
        return np.zeros(len(features))


def test_an_unpicklable_model_without_compiler_scores_natively(tmp_path: Path) -> None:
    model = _UnpicklableModel()
    compiled = compile_model(
        flavor="pyfunc",
        model=model,
        native_predict=model.predict,
        sample=_no_sample,
        cache_root=tmp_path,
        key=KEY,
    )
    assert compiled.manifest.engine == "native"
    assert compiled.predict is None


# --------------------------------------------------------------------------- scikit-learn


def test_sklearn_hist_gradient_boosting_compiles_with_tl2cgen(data: Data, tmp_path: Path) -> None:
    model = HistGradientBoostingClassifier(
        max_iter=20,
        early_stopping=False,  # pyright: ignore[reportArgumentType] (the stubs say str only)
        random_state=0,
    )
    # One OpenMP thread: with LightGBM's runtime in the same process, a busy 2-core machine can
    # make this tiny fit take seconds instead of milliseconds.
    with threadpool_limits(1):
        model.fit(data.train, data.labels)

    def native_predict(features: np.ndarray) -> np.ndarray:
        return model.predict_proba(features)[:, 1]

    def compile_it(sample: Callable[[], np.ndarray]) -> CompiledModel:
        return compile_model(
            flavor="sklearn",
            model=model,
            native_predict=native_predict,
            sample=sample,
            cache_root=tmp_path,
            key=KEY,
        )

    compiled = compile_it(lambda: data.train[:1000])
    assert compiled.manifest.engine == "tl2cgen"
    assert compiled.manifest.verified is True, compiled.manifest.reason
    assert compiled.manifest.batch_rows in BATCH_CANDIDATES
    assert compiled.predict is not None
    np.testing.assert_allclose(
        compiled.predict(data.fresh), native_predict(data.fresh), rtol=0, atol=TOLERANCE
    )

    cached = compile_it(_no_sample)
    assert cached.from_cache is True
    assert cached.predict is not None
    np.testing.assert_allclose(
        cached.predict(data.fresh), native_predict(data.fresh), rtol=0, atol=TOLERANCE
    )


def test_xgboost_compiles_but_float32_scores_are_refused_and_native_serves(
    data: Data, tmp_path: Path
) -> None:
    """XGBoost predicts in float32; tl2cgen's output differs in the last float32 bits (~6e-8),
    which the 1e-9 verification refuses, so the native booster keeps scoring, as it should."""
    import xgboost

    booster = xgboost.train(
        {"objective": "binary:logistic", "max_depth": 4, "nthread": 1, "seed": 0},
        xgboost.DMatrix(data.train, label=data.labels),
        num_boost_round=20,
    )
    native = LoadedScorer("credit_risk_test", 1, [f"f{i}" for i in range(30)], "xgboost", booster)
    compiled = compile_model(
        flavor="xgboost",
        model=booster,
        native_predict=native.predict,
        sample=lambda: data.train[:1000],
        cache_root=tmp_path,
        key=KEY,
    )
    assert compiled.manifest.engine == "tl2cgen"
    assert compiled.manifest.verified is False
    assert "differ from native" in compiled.manifest.reason
    assert compiled.manifest.max_abs_diff is not None
    assert TOLERANCE < compiled.manifest.max_abs_diff < 1e-6
    scorer = FastScorer(native, compiled)
    assert scorer.engine == "native-xgboost"
    np.testing.assert_array_equal(
        scorer.predict(data.fresh), booster.predict(xgboost.DMatrix(data.fresh))
    )


def test_fastest_batch_rows_is_a_candidate(data: Data) -> None:
    assert fastest_batch_rows(lambda rows: rows.sum(axis=1), data.train[:100]) in BATCH_CANDIDATES


# --------------------------------------------------------------------------- through the graph


@dataclass
class Scored:
    platform: Platform
    result: Any
    metadata: dict[str, dict[str, Any]]


@pytest.fixture(scope="module")
def scored(make_platform: PlatformFactory) -> Scored:
    platform = make_platform("compiled")
    assert platform.generate(DAY_A).success
    assert platform.train().success
    result = platform.score(DAY_A)
    assert result.success
    return Scored(platform, result, materializations(result))


def test_graph_serves_the_compiled_model(scored: Scored) -> None:
    model = scored.metadata["model_versions"]
    assert model["scoring_engine"] == "lleaves"
    assert "verified" in model["compile_verification"]
    assert model["compiled_from_cache"] is False  # the first run of this version compiles
    assert model["compile_seconds"] >= 0
    assert model["scoring_batch_rows"] in BATCH_CANDIDATES
    assert scored.metadata["predictions"]["scoring_engine"] == "lleaves"


def test_model_cache_lives_in_the_data_dir(scored: Scored) -> None:
    settings = scored.platform.settings
    assert settings.model_cache_dir == settings.data_dir / "model_cache"
    assert settings.model_cache_dir.is_relative_to(scored.platform.root)
    manifests = list(
        (settings.model_cache_dir / scored.platform.model_name).glob("v1-*/manifest.json")
    )
    assert len(manifests) == 1
    manifest = json.loads(manifests[0].read_text())
    assert manifest["engine"] == "lleaves" and manifest["verified"] is True
    assert (manifests[0].parent / "model.so").is_file()


def test_graph_scores_equal_lightgbm_native_predictions(scored: Scored) -> None:
    platform = scored.platform
    validated = read_day(platform.layout.validated, DAY_A)
    predictions = read_day(platform.predictions, DAY_A)
    assert predictions.num_rows == validated.num_rows > 0

    registry = platform.registry
    previous = (mlflow.get_tracking_uri(), mlflow.get_registry_uri())
    mlflow.set_tracking_uri(registry.tracking_uri)
    mlflow.set_registry_uri(registry.registry_uri)
    try:
        model = mlflow_lightgbm.load_model(f"models:/{platform.model_name}/1")
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])
    assert isinstance(model, lgb.Booster)

    names = model.feature_name()
    native = np.concatenate(
        [_lgb(model)(feature_matrix(batch, names)) for batch in validated.to_batches()]
    )
    expected = dict(zip(validated.column(KEY_COLUMN).to_pylist(), native.tolist(), strict=True))
    keys = predictions.column(KEY_COLUMN).to_pylist()
    assert set(keys) == set(expected)
    got = predictions.column(SCORE_COLUMN).to_numpy()
    want = np.array([expected[key] for key in keys])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
