"""Compiled tree ensembles with the real compilers (lleaves, treelite + tl2cgen), no mocks.

A compiled model must score exactly like the model library (within ``TOLERANCE``; XGBoost in its
own float32 precision), be compiled once per artifact fingerprint and reused from the on-disk
cache - also by another process - and be refused (native scoring) when its scores disagree or no
compiler exists. Through the graph, the platform scores with lleaves and the prediction table
equals LightGBM's own predictions.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import lightgbm as lgb
import mlflow
import mlflow.artifacts
import mlflow.lightgbm as mlflow_lightgbm
import mlflow.xgboost as mlflow_xgboost
import numpy as np
import pytest
import xgboost
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from batch_inference_platform.lib.features.synthetic import KEY_COLUMN
from batch_inference_platform.lib.registry.client import pointed_at
from batch_inference_platform.lib.scoring.compiled import (
    BATCH_CANDIDATES,
    TOLERANCE,
    CompiledModel,
    artifact_fingerprint,
    compile_model,
    fastest_batch_rows,
)
from batch_inference_platform.lib.scoring.inputs import feature_matrix
from batch_inference_platform.lib.scoring.outputs import SCORE_COLUMN

from .conftest import DAY_A, Platform, PlatformFactory, materializations, read_day

FEATURES = 30
KEY = "credit_risk_test/v1"


def _lgb(booster: lgb.Booster) -> Callable[[np.ndarray], np.ndarray]:
    """LightGBM's own predict, typed as the dense score vector it returns here."""
    return lambda features: np.asarray(booster.predict(features), np.float64)


def _no_sample() -> np.ndarray:
    raise AssertionError("sample() must not be called on a cache hit")


def _fingerprint(save: Callable[[Path], object]) -> str:
    """What the loader passes: the fingerprint of the model's saved artifact directory."""
    with tempfile.TemporaryDirectory() as directory:
        save(Path(directory))
        return artifact_fingerprint(Path(directory))


def _lgb_fingerprint(booster: lgb.Booster) -> str:
    return _fingerprint(lambda directory: booster.save_model(str(directory / "model.txt")))


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
        fingerprint=_lgb_fingerprint(booster),
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
    fingerprint = _lgb_fingerprint(booster)
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


def test_compile_metadata_says_whether_a_use_paid_for_the_compile(
    lightgbm_compiled: LightGBMCompiled,
) -> None:
    """A use (a step) that began before this process compiled the model paid the compile; one
    that began after it was served by the process's cache; the disk cache serves everyone.
    The original compile's seconds stay in the manifest either way."""
    first, second = lightgbm_compiled.first, lightgbm_compiled.second
    assert first.compiled_at is not None
    during = first.compiled_at  # a step that started as the compile began
    after = time.perf_counter()  # a later run in the same process (the demo's days 2 and 3)
    assert first.served_from_cache(during) is False
    assert first.compile_seconds_now(during) == first.manifest.compile_seconds > 0
    assert first.served_from_cache(after) is True
    assert first.compile_seconds_now(after) == 0.0
    assert second.served_from_cache(during) is True
    assert second.compile_seconds_now(during) == 0.0
    # A model that scores natively was served nothing compiled, cached or not.
    native = replace(second, predict=None)
    assert native.served_from_cache(after) is False
    assert second.manifest.compile_seconds == first.manifest.compile_seconds


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
            fingerprint={_lgb_fingerprint(booster)!r},
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
        fingerprint="0123456789abcdef",
    )
    assert compiled.manifest.engine == "native"
    assert compiled.manifest.verified is False
    assert compiled.predict is None
    assert "no compiler" in compiled.manifest.reason
    assert "LogisticRegression" in compiled.manifest.reason
    assert compiled.manifest.batch_rows in BATCH_CANDIDATES


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
        fingerprint="0123456789abcdef",
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
            fingerprint="0123456789abcdef",
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


# --------------------------------------------------------------------------- XGBoost


def _compile_xgboost(
    model: Any, native_predict: Callable[[np.ndarray], np.ndarray], data: Data, cache_root: Path
) -> CompiledModel:
    return compile_model(
        flavor="xgboost",
        model=model,
        native_predict=native_predict,
        sample=lambda: data.train[:1000],
        cache_root=cache_root,
        key=KEY,
        fingerprint=_fingerprint(lambda directory: model.save_model(directory / "model.ubj")),
    )


def _on_thresholds(model: Any) -> np.ndarray:
    """For every split of the model, two rows that reach it with the split's feature exactly on
    its threshold and one float32 step below it: the rows a misplaced threshold misroutes.

    A row reaches a split when each ancestor's feature sits on the ancestor's side of its
    threshold (the nearest ancestor decides); all other features are missing (NaN).
    """
    booster = model.get_booster() if hasattr(model, "get_booster") else model
    trees = json.loads(bytes(booster.save_raw(raw_format="json")))["learner"]["gradient_booster"]
    rows: list[np.ndarray] = []
    for tree in trees["model"]["trees"]:
        left, parents = tree["left_children"], tree["parents"]
        feature, threshold = tree["split_indices"], np.array(tree["split_conditions"], np.float32)
        for node in (node for node, child in enumerate(left) if child != -1):
            path = np.full(booster.num_features(), np.nan, np.float32)
            child, parent = node, parents[node]
            while 0 <= parent < len(left):
                if np.isnan(path[feature[parent]]):
                    below = np.nextafter(threshold[parent], np.float32(-np.inf))
                    path[feature[parent]] = below if left[parent] == child else threshold[parent]
                child, parent = parent, parents[parent]
            for value in (threshold[node], np.nextafter(threshold[node], np.float32(-np.inf))):
                rows.append(path.copy())
                rows[-1][feature[node]] = value
    return np.array(rows, np.float64)


def _assert_scores_like_xgboost(
    compiled: CompiledModel,
    model: Any,
    native_predict: Callable[[np.ndarray], np.ndarray],
    data: Data,
) -> None:
    """Verified, and equal to XGBoost's own float32 scores on fresh rows (with NaNs) and on rows
    sitting exactly on the split thresholds."""
    assert compiled.manifest.engine == "tl2cgen"
    assert compiled.manifest.verified is True, compiled.manifest.reason
    assert compiled.manifest.max_abs_diff is not None
    assert compiled.manifest.max_abs_diff <= TOLERANCE
    assert compiled.predict is not None
    rows = np.vstack([data.fresh, _on_thresholds(model)])
    scores = compiled.predict(rows)
    assert scores.shape == (len(rows),) and scores.dtype == np.float64
    native = native_predict(rows)
    assert np.isnan(rows).any() and len(np.unique(native)) > 100
    np.testing.assert_allclose(scores, native, rtol=0, atol=TOLERANCE)


def test_xgboost_binary_booster_compiles_and_scores_like_xgboost(
    data: Data, tmp_path: Path
) -> None:
    """Scored in XGBoost's float32: the same sums in the same order, not merely to ~1e-7."""
    booster = xgboost.train(
        {"objective": "binary:logistic", "max_depth": 4, "nthread": 1, "seed": 0},
        xgboost.DMatrix(data.train, label=data.labels),
        num_boost_round=20,
    )

    def native_predict(features: np.ndarray) -> np.ndarray:
        return booster.predict(xgboost.DMatrix(features)).astype(np.float64)

    compiled = _compile_xgboost(booster, native_predict, data, tmp_path)
    _assert_scores_like_xgboost(compiled, booster, native_predict, data)
    assert compiled.manifest.batch_rows in BATCH_CANDIDATES

    cached = _compile_xgboost(booster, native_predict, data, tmp_path)
    assert cached.from_cache is True
    assert cached.cache_dir == compiled.cache_dir
    _assert_scores_like_xgboost(cached, booster, native_predict, data)


def test_xgboost_sklearn_regressor_compiles_and_scores_like_xgboost(
    data: Data, tmp_path: Path
) -> None:
    target = 3 * data.train[:, 0] - data.train[:, 1] + data.labels
    model = xgboost.XGBRegressor(n_estimators=30, max_depth=4, n_jobs=1, random_state=0)
    model.fit(data.train, target)

    def native_predict(features: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict(features), np.float64)

    compiled = _compile_xgboost(model, native_predict, data, tmp_path)
    _assert_scores_like_xgboost(compiled, model, native_predict, data)


def _credit_rows(rng: np.random.Generator, rows: int) -> np.ndarray:
    """Realistic credit features: integer ages and credit scores, incomes ~1e5, loan amounts up
    to 5e5, and a utilisation-like column with 10% missing."""
    features = np.column_stack(
        [
            rng.integers(18, 90, rows),
            rng.lognormal(11, 1, rows),
            rng.uniform(1000, 5e5, rows),
            rng.integers(300, 850, rows),
            rng.uniform(0, 60, rows),
        ]
    ).astype(np.float64)
    features[rng.random(rows) < 0.1, 4] = np.nan
    return features


@pytest.fixture(scope="module")
def credit() -> Data:
    """Every score below 580 defaults, so XGBoost's first tree has a leaf right below its root
    (node 1): a leaf among the first four nodes, whose values a corrupted copy of the first
    tree's leaves loses. Elsewhere the default risk is noisy, so the scores vary."""
    rng = np.random.default_rng(0)
    train = _credit_rows(rng, 3000)
    risk = np.nan_to_num(train[:, 4], nan=45.0) / 30 + train[:, 2] / 5e5 - np.log(train[:, 1]) / 12
    noisy = rng.random(3000) < 1 / (1 + np.exp(-3 * (risk - 0.6)))
    labels = ((train[:, 3] < 580) | noisy).astype(np.int32)
    return Data(train, labels, _credit_rows(rng, 1500))


def _first_tree_has_early_leaf(model: Any) -> bool:
    booster = model.get_booster() if hasattr(model, "get_booster") else model
    trees = json.loads(bytes(booster.save_raw(raw_format="json")))["learner"]["gradient_booster"]
    return -1 in trees["model"]["trees"][0]["left_children"][1:4]


def test_xgboost_realistic_credit_model_via_mlflow_and_booster_scores_like_xgboost(
    credit: Data, tmp_path: Path
) -> None:
    """Large-magnitude features with NaNs, and a first tree with a leaf among its first four
    nodes (where the intercept is folded in): an ``XGBClassifier`` saved and loaded through
    ``mlflow.xgboost`` and a raw ``Booster`` both score exactly like XGBoost (once, these rows
    differed by 0.03 because the first tree's leaves were corrupted)."""
    classifier = xgboost.XGBClassifier(n_estimators=20, max_depth=4, n_jobs=1, random_state=0)
    classifier.fit(credit.train, credit.labels)
    mlflow_xgboost.save_model(classifier, str(tmp_path / "model"))
    loaded = mlflow_xgboost.load_model(str(tmp_path / "model"))
    assert isinstance(loaded, xgboost.XGBClassifier)

    def classifier_predict(features: np.ndarray) -> np.ndarray:
        return np.asarray(loaded.predict_proba(features), np.float64)[:, 1]

    booster = xgboost.train(
        {"objective": "binary:logistic", "max_depth": 4, "nthread": 1, "seed": 0},
        xgboost.DMatrix(credit.train, label=credit.labels),
        num_boost_round=20,
    )

    def booster_predict(features: np.ndarray) -> np.ndarray:
        return booster.predict(xgboost.DMatrix(features)).astype(np.float64)

    for model, native_predict, cache in (
        (loaded, classifier_predict, "classifier"),
        (booster, booster_predict, "booster"),
    ):
        assert _first_tree_has_early_leaf(model)
        compiled = _compile_xgboost(model, native_predict, credit, tmp_path / cache)
        _assert_scores_like_xgboost(compiled, model, native_predict, credit)


# --------------------------------------------------------------------------- cache key


def test_artifact_fingerprint_is_the_content_of_the_files(tmp_path: Path) -> None:
    """Equal for a copy elsewhere with other timestamps; different when one byte changes or a
    file is renamed."""
    original = tmp_path / "original"
    (original / "data").mkdir(parents=True)
    (original / "MLmodel").write_text("flavors:\n  sklearn:\n    serialization_format: skops\n")
    payload = np.random.default_rng(0).bytes(3 << 20)  # longer than one read chunk
    (original / "data" / "model.skops").write_bytes(payload)
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    os.utime(copy / "MLmodel", (0, 0))

    fingerprint = artifact_fingerprint(original)
    assert len(fingerprint) == 16 and int(fingerprint, 16) >= 0
    assert artifact_fingerprint(copy) == fingerprint

    changed = bytearray(payload)
    changed[len(payload) // 2] ^= 1
    (copy / "data" / "model.skops").write_bytes(changed)
    assert artifact_fingerprint(copy) != fingerprint
    (copy / "data" / "model.skops").write_bytes(payload)
    assert artifact_fingerprint(copy) == fingerprint

    (copy / "MLmodel").rename(copy / "MLmodel.yaml")
    assert artifact_fingerprint(copy) != fingerprint


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
    assert model["compile_seconds"] > 0  # paid by this run
    assert int(model["scoring_batch_rows"]) in BATCH_CANDIDATES
    assert scored.metadata["predictions"]["scoring_engine"] == "lleaves"


def test_model_cache_lives_in_the_data_dir(scored: Scored, tmp_path: Path) -> None:
    platform = scored.platform
    settings = platform.settings
    assert settings.model_cache_dir == settings.data_dir / "model_cache"
    assert settings.model_cache_dir.is_relative_to(platform.root)
    manifests = list((settings.model_cache_dir / platform.model_name).glob("v1*/**/manifest.json"))
    assert len(manifests) == 1
    manifest = json.loads(manifests[0].read_text())
    assert manifest["engine"] == "lleaves" and manifest["verified"] is True
    assert (manifests[0].parent / "model.so").is_file()
    # The entry is named by the registered artifact's content, which any process recomputes.
    with pointed_at(platform.registry):
        artifact = mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{platform.model_name}/1", dst_path=str(tmp_path)
        )
    assert manifests[0].parent.name.endswith(f"-{artifact_fingerprint(Path(artifact))}")


def test_graph_scores_equal_lightgbm_native_predictions(scored: Scored) -> None:
    platform = scored.platform
    validated = read_day(platform.tables.validated, DAY_A)
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


def test_a_damaged_cache_entry_falls_back_to_native(tmp_path: Path) -> None:
    """A cache entry missing a file must not stop scoring: native serves, saying why."""
    rng = np.random.default_rng(3)
    features = rng.normal(size=(500, 4))
    booster = lgb.train(
        {"objective": "binary", "verbose": -1, "num_threads": 1},
        lgb.Dataset(features, (features[:, 0] > 0).astype(int)),
        num_boost_round=3,
    )

    def compile_it() -> CompiledModel:
        return compile_model(
            flavor="lightgbm",
            model=booster,
            native_predict=lambda rows: np.asarray(booster.predict(rows)),
            sample=lambda: features,
            cache_root=tmp_path,
            key="damaged/v1",
            fingerprint="feedface",
        )

    assert compile_it().predict is not None
    (tmp_path / "damaged" / "v1-feedface" / "model.txt").unlink()
    damaged = compile_it()
    assert damaged.predict is None and damaged.from_cache
    assert "does not load" in damaged.manifest.reason
