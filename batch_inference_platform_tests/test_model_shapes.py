"""Any model a data scientist registers is served by its signature and the declared output kind:
each shape below is a deployment of its own (credit_risk's source, a contract of the model's
inputs), registered in the platform's MLflow registry, scored through Dagster on the local and
Spark engines, and every validated row compared with the model's own predict."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from batch_inference_platform.defs.models.assets import REFUSED_TAG
from batch_inference_platform.lib.registry.adapters import (
    OutputMismatchError,
    bind_output,
    model_shape,
)
from batch_inference_platform.lib.registry.resolution import SERVED_TAG
from batch_inference_platform.lib.scoring.outputs import OutputKind, class_column

from . import model_shapes as shapes
from .conftest import (
    DAY_A,
    Platform,
    PlatformFactory,
    check_evaluations,
    failure_messages,
    materializations,
    read_day,
)

TOLERANCE = 1e-9
Expected = dict[str, np.ndarray]
"""Per prediction column, the model's own output for each validated row (frame order)."""
Predict = Callable[[pd.DataFrame], Expected]
"""The model's own predictions for validated rows (a frame of the validated table)."""
Built = tuple[Callable[[str], Any], Predict]
"""How to log a trained model under a registered name, and its own predict."""


@dataclass(frozen=True)
class Case:
    """One model shape: its output kind, its inputs (its deployment's contract), and how to
    train and log it on validated rows."""

    kind: str
    inputs: list[str]
    build: Callable[[pd.DataFrame], Built]


WITH_STRINGS = shapes.STRINGS + shapes.NUMBERS
CATEGORICALS = ["employment_type", "loan_term_months", *shapes.NUMBERS[1:]]


def _pipeline(frame: pd.DataFrame) -> Built:
    model = shapes.string_pipeline(frame, shapes.default_label(frame))
    log = shapes.log_sklearn(model, shapes.columns(frame, WITH_STRINGS))
    return log, lambda rows: {
        "score": model.predict_proba(shapes.columns(rows, WITH_STRINGS))[:, 1]
    }


def _pyfunc_integers(frame: pd.DataFrame) -> Built:
    inputs = shapes.columns(frame, shapes.INTEGERS)
    assert all(str(t) == "int64" for t in inputs.dtypes.tolist())  # the signature says long
    log = shapes.log_pyfunc(shapes.IntegerRisk(), inputs)
    return log, lambda rows: {
        "score": shapes.own_integer_risk(shapes.columns(rows, shapes.INTEGERS))
    }


def _lgbm_regressor(frame: pd.DataFrame) -> Built:
    inputs = shapes.columns(frame, shapes.NUMBERS)
    model = lgb.LGBMRegressor(n_estimators=15, num_leaves=7, verbose=-1, n_jobs=1)
    model.fit(inputs, shapes.loss_amount(frame))
    return shapes.log_lightgbm(model, inputs), lambda rows: {
        "score": np.asarray(model.predict(shapes.columns(rows, shapes.NUMBERS)))
    }


def _matrix(rows: pd.DataFrame, names: list[str]) -> np.ndarray:
    return shapes.columns(rows, names).to_numpy(np.float64)


def _booster_regression(frame: pd.DataFrame) -> Built:
    booster = shapes.lightgbm_booster(frame, shapes.loss_amount(frame), "regression")
    log = shapes.log_lightgbm(booster, shapes.columns(frame, shapes.NUMBERS))
    return log, lambda rows: {"score": np.asarray(booster.predict(_matrix(rows, shapes.NUMBERS)))}


def _three_classes(frame: pd.DataFrame) -> Built:
    model = shapes.string_pipeline(frame, shapes.risk_band(frame))

    def predict(rows: pd.DataFrame) -> Expected:
        inputs = shapes.columns(rows, WITH_STRINGS)
        probabilities = model.predict_proba(inputs)
        expected = {class_column(str(c)): probabilities[:, i] for i, c in enumerate(model.classes_)}
        expected["label"] = model.predict(inputs).astype(str)
        return expected

    return shapes.log_sklearn(model, shapes.columns(frame, WITH_STRINGS)), predict


def _labels(frame: pd.DataFrame) -> Built:
    model = shapes.string_pipeline(frame, shapes.risk_band(frame))
    log = shapes.log_sklearn(model, shapes.columns(frame, WITH_STRINGS))
    return log, lambda rows: {
        "label": model.predict(shapes.columns(rows, WITH_STRINGS)).astype(str)
    }


def _booster_multiclass(frame: pd.DataFrame) -> Built:
    bands = pd.Series(shapes.risk_band(frame)).map({"low": 0, "mid": 1, "high": 2}).to_numpy()
    booster = shapes.lightgbm_booster(frame, bands, "multiclass")

    def predict(rows: pd.DataFrame) -> Expected:
        probabilities = np.asarray(booster.predict(_matrix(rows, shapes.NUMBERS)))
        expected = {f"score_{i}": probabilities[:, i] for i in range(3)}
        expected["label"] = probabilities.argmax(axis=1).astype(str)
        return expected

    return shapes.log_lightgbm(booster, shapes.columns(frame, shapes.NUMBERS)), predict


def _xgboost(frame: pd.DataFrame) -> Built:
    model = shapes.xgboost_classifier(frame, shapes.default_label(frame))
    log = shapes.log_xgboost(model, shapes.columns(frame, shapes.NUMBERS))
    return log, lambda rows: {
        "score": np.asarray(model.predict_proba(_matrix(rows, shapes.NUMBERS)))[:, 1].astype(
            np.float64
        )
    }


def _booster_reordered(frame: pd.DataFrame) -> Built:
    """Fit on the features in reverse order; the signature lists them in table order."""
    reverse = shapes.NUMBERS[::-1]
    booster = lgb.train(
        {"objective": "binary", "verbose": -1, "num_threads": 1},
        lgb.Dataset(_matrix(frame, reverse), shapes.default_label(frame), feature_name=reverse),
        num_boost_round=15,
    )
    log = shapes.log_lightgbm(booster, shapes.columns(frame, shapes.NUMBERS))
    return log, lambda rows: {"score": np.asarray(booster.predict(_matrix(rows, reverse)))}


def _forest_reordered(frame: pd.DataFrame) -> Built:
    reverse = shapes.NUMBERS[::-1]
    model = RandomForestClassifier(n_estimators=5, max_depth=4, random_state=0)
    model.fit(shapes.columns(frame, reverse).fillna(0), shapes.default_label(frame))
    log = shapes.log_sklearn(
        model, shapes.columns(frame, shapes.NUMBERS).fillna(0), ("sklearn.tree._tree.Tree",)
    )
    return log, lambda rows: {
        "score": np.asarray(model.predict_proba(shapes.columns(rows, reverse)))[:, 1]
    }


def _lightgbm_categoricals(frame: pd.DataFrame) -> Built:
    """LightGBM on a DataFrame with string and integer pandas categoricals."""
    categorical = {"employment_type": "category", "loan_term_months": "category"}
    booster = lgb.train(
        {"objective": "binary", "verbose": -1, "num_threads": 1, "min_data_per_group": 5},
        lgb.Dataset(
            shapes.columns(frame, CATEGORICALS).astype(categorical), shapes.default_label(frame)
        ),
        num_boost_round=15,
    )
    log = shapes.log_lightgbm(booster, shapes.columns(frame, CATEGORICALS))
    return log, lambda rows: {
        "score": np.asarray(booster.predict(shapes.columns(rows, CATEGORICALS).astype(categorical)))
    }


CASES = {
    "shape_sklearn_pipeline_strings": Case("probability", WITH_STRINGS, _pipeline),
    "shape_pyfunc_integers": Case("probability", shapes.INTEGERS, _pyfunc_integers),
    "shape_lgbm_regressor": Case("value", shapes.NUMBERS, _lgbm_regressor),
    "shape_lightgbm_booster_regression": Case("value", shapes.NUMBERS, _booster_regression),
    "shape_sklearn_three_classes": Case("class_probabilities", WITH_STRINGS, _three_classes),
    "shape_lightgbm_booster_multiclass": Case(
        "class_probabilities", shapes.NUMBERS, _booster_multiclass
    ),
    "shape_sklearn_labels": Case("label", WITH_STRINGS, _labels),
    "shape_lightgbm_reordered_features": Case("probability", shapes.NUMBERS, _booster_reordered),
    "shape_forest_reordered_features": Case("probability", shapes.NUMBERS, _forest_reordered),
    "shape_lightgbm_pandas_categoricals": Case("probability", CATEGORICALS, _lightgbm_categoricals),
    "shape_xgboost_classifier": Case("probability", shapes.NUMBERS, _xgboost),
}


@dataclass
class Base:
    platform: Platform
    frame: pd.DataFrame
    """DAY_A's validated rows under the demo's full contract (its 30 numeric and 4 string
    columns): what every model is trained on."""
    make: PlatformFactory
    predict: dict[str, Predict]


@pytest.fixture(scope="module")
def base(make_platform: PlatformFactory) -> Base:
    platform = make_platform("model_shapes", deployment={"contract": shapes.contract()})
    assert platform.generate(DAY_A).success
    assert platform.train().success
    assert platform.score(DAY_A).success  # validates DAY_A
    frame = shapes.validated_frame(platform, DAY_A)
    assert set(shapes.STRINGS) <= set(frame.columns)
    return Base(platform, frame, make_platform, {})


def _deployment(
    base: Base, name: str, kind: str, inputs: list[str], engine: str = "local"
) -> Platform:
    """Deployment ``name`` on the same source, lake and registry, serving model ``name`` as
    ``kind``; its contract is ``inputs`` (the model's inputs, as the demo declares them)."""
    platform = base.make(
        "unused",
        share=base.platform,
        deployment={
            "name": name,
            "model": {"name": name},
            "output": {"kind": kind},
            "contract": shapes.contract(inputs),
        },
        ENGINE=engine,
        REALTIME__DEPLOYMENT="",  # insights need a probability: none for these shapes
    )
    return replace(platform, deployment_name=name)


def _case(base: Base, name: str, engine: str = "local") -> Platform:
    """The case's deployment; its model is trained on the validated rows and registered once
    (alias ``champion``)."""
    case = CASES[name]
    if name not in base.predict:
        log, predict = case.build(base.frame)
        shapes.register(_deployment(base, name, case.kind, case.inputs), log)
        base.predict[name] = predict
    return _deployment(base, name, case.kind, case.inputs, engine)


def _expected(base: Base, name: str, frame: pd.DataFrame) -> Expected:
    """The case's model's own predictions for ``frame``."""
    return base.predict[name](frame)


def _assert_rows_equal(platform: Platform, frame: pd.DataFrame, expected: Expected) -> None:
    """Every prediction row equals the model's own output for the same key."""
    predictions = read_day(platform.predictions, DAY_A).to_pandas().set_index("customer_id")
    assert len(predictions) == len(frame) > 0
    for column, values in expected.items():
        mine = predictions.loc[frame["customer_id"], column].to_numpy()
        if column == "label":
            assert (mine == values).all(), column
        else:
            assert np.abs(mine.astype(np.float64) - values).max() <= TOLERANCE, column
    extra = {"score", "label"} | {c for c in predictions if c.startswith("score_")}
    assert extra & set(predictions.columns) == set(expected), "no other output columns"


@pytest.mark.parametrize("engine", ["local", "spark"])
@pytest.mark.parametrize("name", list(CASES))
def test_each_shape_scores_like_its_own_predict(base: Base, name: str, engine: str) -> None:
    platform = _case(base, name, engine)
    result = platform.score(DAY_A)
    assert result.success, failure_messages(result)
    frame = shapes.validated_frame(platform, DAY_A)  # validated by the model's inputs
    _assert_rows_equal(platform, frame, _expected(base, name, frame))
    meta = materializations(result)
    assert meta["model_versions"]["fell_back"] is False
    assert meta["predictions"]["output_kind"] == CASES[name].kind
    checks = check_evaluations(result)
    assert all(check.passed for check in checks.values()), checks


def test_a_regression_value_is_never_clamped(base: Base) -> None:
    name = "shape_lightgbm_booster_regression"
    platform = _case(base, name)
    result = platform.score(DAY_A)
    assert result.success
    expected = _expected(base, name, shapes.validated_frame(platform, DAY_A))["score"]
    meta = materializations(result)["predictions"]
    # 3,000 rows fit in the statistics' sample: the quantiles are exact.
    p50 = meta["score_quantiles"]["p50"]
    assert p50 == pytest.approx(np.quantile(expected, 0.5))
    assert p50 > 100
    run = platform.registry.client.get_run(meta["mlflow_scoring_run"])
    assert run.data.metrics["score_p50"] == pytest.approx(p50)
    checks = check_evaluations(result)
    assert "scores_in_unit_range" not in checks
    assert checks["no_null_scores"].passed


def test_class_probabilities_are_checked_to_sum_to_one(base: Base) -> None:
    name = "shape_sklearn_three_classes"
    platform = _case(base, name)
    result = platform.score(DAY_A)
    checks = check_evaluations(result)
    assert checks["class_probabilities_sum_to_one"].passed
    assert checks["scores_in_unit_range"].passed
    meta = materializations(result)["predictions"]
    assert set(meta["label_counts"]) == {"high", "low", "mid"}
    assert sum(meta["label_counts"].values()) == len(shapes.validated_frame(platform, DAY_A))


def test_sklearn_models_use_a_dataframe_and_boosters_a_compiled_matrix(base: Base) -> None:
    for name, model_input, engines in (
        ("shape_sklearn_pipeline_strings", "typed DataFrame", {"native-sklearn"}),
        ("shape_lgbm_regressor", "float64 matrix", {"lleaves"}),
        ("shape_xgboost_classifier", "float64 matrix", {"tl2cgen"}),
    ):
        result = _case(base, name).score(DAY_A)
        meta = materializations(result)["model_versions"]
        assert meta["model_input"] == model_input, name
        assert meta["scoring_engine"] in engines, (name, meta["compile_verification"])


# --------------------------------------------------------------------------- refusals


@dataclass
class Refusals:
    platform: Platform
    results: dict[int, Any]


FALLBACK = "shape_fallback"


@pytest.fixture(scope="module")
def refusals(base: Base) -> Refusals:
    """v1 serves (the approved champion); v2 passes but is never promoted; then v3 (3 classes),
    v4 (raises) and v5 (needs a column the table lacks) each take the alias and are scored."""
    platform = _deployment(base, FALLBACK, "probability", WITH_STRINGS)
    frame = base.frame
    inputs = shapes.columns(frame, WITH_STRINGS)
    binary = shapes.string_pipeline(frame, shapes.default_label(frame))
    assert shapes.register(platform, shapes.log_sklearn(binary, inputs)) == 1
    results = {1: platform.score(DAY_A)}
    assert shapes.register(platform, shapes.log_sklearn(binary, inputs), alias=False) == 2
    three = shapes.string_pipeline(frame, shapes.risk_band(frame))
    assert shapes.register(platform, shapes.log_sklearn(three, inputs)) == 3
    results[3] = platform.score(DAY_A)
    assert shapes.register(platform, shapes.log_pyfunc(shapes.Raising(), inputs)) == 4
    results[4] = platform.score(DAY_A)
    wider = inputs.assign(bureau_segment_score=1.0)
    assert shapes.register(platform, shapes.log_sklearn(binary, wider)) == 5
    results[5] = platform.score(DAY_A)
    return Refusals(platform, results)


@pytest.mark.parametrize(
    ("version", "reason"),
    [
        (3, "3 classes ['high', 'low', 'mid'] (Pipeline); this use case expects the probability"),
        (4, "smoke test: predict fails: RuntimeError: scaler state missing: refit the pipeline"),
        (5, "input 'bureau_segment_score' (double) is not in the table"),
    ],
)
def test_a_refused_version_falls_back_to_the_last_approved_champion(
    refusals: Refusals, version: int, reason: str
) -> None:
    platform, result = refusals.platform, refusals.results[version]
    assert result.success, failure_messages(result)
    served = set(read_day(platform.predictions, DAY_A).column("model_version").to_pylist())
    assert served == {1}, "v1, the last approved champion - never v2, which was never promoted"
    meta = materializations(result)["model_versions"]
    assert (meta["model_version"], meta["alias_holder_version"]) == ("1", str(version))
    assert "last approved champion" in meta["serving_reason"]
    check = check_evaluations(result)["champion_passes_validation"]
    assert check.passed is False and check.description is not None
    assert reason in check.description
    tags = platform.registry.client.get_model_version(FALLBACK, str(version)).tags
    assert reason in tags[REFUSED_TAG]
    assert SERVED_TAG not in tags


def test_only_versions_that_served_are_approved(refusals: Refusals) -> None:
    client = refusals.platform.registry.client
    tags = {v: client.get_model_version(FALLBACK, str(v)).tags for v in range(1, 6)}
    assert [v for v, t in tags.items() if SERVED_TAG in t] == [1]
    assert [v for v, t in tags.items() if REFUSED_TAG in t] == [3, 4, 5]


def test_predictions_alone_refuse_a_stale_serving_version(refusals: Refusals) -> None:
    """model_versions resolved v5 -> v1; the alias then moves to v2: predictions alone fail."""
    platform = refusals.platform
    client = platform.registry.client
    client.set_registered_model_alias(FALLBACK, platform.alias, "2")
    try:
        result = platform.score(DAY_A, asset_selection=[platform.scope.predictions])
    finally:
        client.set_registered_model_alias(FALLBACK, platform.alias, "5")
    assert not result.success
    message = failure_messages(result)
    assert "stale serving version" in message
    assert "it now points at v2" in message


# --------------------------------------------------------------------------- binding, in memory


def _no_sample() -> np.ndarray:
    raise AssertionError("only a pyfunc's output is observed on a sample")


def test_a_regressor_is_refused_as_a_probability_naming_both() -> None:
    rng = np.random.default_rng(0)
    model = lgb.LGBMRegressor(n_estimators=2, verbose=-1).fit(
        rng.normal(size=(50, 2)), rng.normal(size=50)
    )
    with pytest.raises(OutputMismatchError) as error:
        bind_output(model_shape("lightgbm", model), OutputKind.PROBABILITY, "1", _no_sample)
    assert str(error.value) == (
        "a regression model (LGBMRegressor); this use case expects the probability of class 1"
    )


def test_a_multiclass_booster_is_refused_as_a_probability() -> None:
    rng = np.random.default_rng(0)
    booster = lgb.train(
        {"objective": "multiclass", "num_class": 3, "verbose": -1},
        lgb.Dataset(rng.normal(size=(90, 2)), np.arange(90) % 3),
        num_boost_round=2,
    )
    with pytest.raises(OutputMismatchError, match=r"^3 classes \['0', '1', '2'\] \(LightGBM "):
        bind_output(model_shape("lightgbm", booster), OutputKind.PROBABILITY, "1", _no_sample)


def test_the_positive_class_must_be_one_of_the_model_classes() -> None:
    rng = np.random.default_rng(0)
    model = LogisticRegression().fit(rng.normal(size=(40, 2)), np.array(["no", "yes"] * 20))
    with pytest.raises(OutputMismatchError, match=r"classes are \['no', 'yes'\]; .* class 1$"):
        bind_output(model_shape("sklearn", model), OutputKind.PROBABILITY, "1", _no_sample)
    spec, predict = bind_output(
        model_shape("sklearn", model), OutputKind.PROBABILITY, "yes", _no_sample
    )
    rows = rng.normal(size=(5, 2))
    np.testing.assert_array_equal(predict(rows), model.predict_proba(rows)[:, 1])
    assert spec.positive_class == "yes"


# --------------------------------------------------------------------------- compile cache key

_FINGERPRINT = """
import sys
from batch_inference_platform.lib.registry.client import ModelRegistry
from batch_inference_platform.lib.registry.loader import load_model
registry = ModelRegistry(sys.argv[1])
print("FINGERPRINT", load_model(registry, registry.version(sys.argv[2], 1)).fingerprint)
"""


def test_a_skops_model_has_the_same_cache_key_in_every_process(base: Base) -> None:
    """MLflow 3 saves scikit-learn models with skops; the key is the artifact's bytes."""
    name = "shape_hgb_skops"
    platform = _deployment(base, name, "probability", shapes.NUMBERS)
    inputs = shapes.columns(base.frame, shapes.NUMBERS)
    # A random forest's pickle differs in every process once loaded from skops.
    forest = RandomForestClassifier(n_estimators=5, max_depth=4, random_state=0)
    model = forest.fit(inputs.fillna(0), shapes.default_label(base.frame))
    trusted = ("sklearn.tree._tree.Tree",)
    shapes.register(platform, shapes.log_sklearn(model, inputs, trusted))
    flavor = platform.registry.flavors(platform.registry.version(name, 1))["sklearn"]
    assert flavor["serialization_format"] == "skops"
    prints = [
        subprocess.run(
            [sys.executable, "-c", _FINGERPRINT, platform.registry.tracking_uri, name],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for _ in range(2)
    ]
    keys = [line.split()[1] for out in prints for line in out.splitlines() if "FINGERPRINT" in line]
    assert len(keys) == 2 and keys[0] == keys[1], prints


def test_a_version_whose_checks_fail_is_not_an_approved_champion(base: Base) -> None:
    """It passes the smoke test (1,024 rows) but scores NaN on the real partition."""
    platform = _deployment(base, "shape_nan_on_large_batches", "probability", shapes.NUMBERS)
    inputs = shapes.columns(base.frame, shapes.NUMBERS)
    assert shapes.register(platform, shapes.log_pyfunc(shapes.NanOnLargeBatches(), inputs)) == 1
    result = platform.score(DAY_A)
    assert check_evaluations(result)["no_null_scores"].passed is False
    tags = platform.registry.client.get_model_version("shape_nan_on_large_batches", "1").tags
    assert SERVED_TAG not in tags


def test_a_changed_class_set_is_refused_before_it_breaks_the_table(base: Base) -> None:
    """v1 (3 classes) wrote the table; v2 has 2 classes: refused, v1 keeps serving."""
    name = "shape_class_set_change"
    platform = _deployment(base, name, "class_probabilities", WITH_STRINGS)
    inputs = shapes.columns(base.frame, WITH_STRINGS)
    three = shapes.string_pipeline(base.frame, shapes.risk_band(base.frame))
    assert shapes.register(platform, shapes.log_sklearn(three, inputs)) == 1
    assert platform.score(DAY_A).success
    two = shapes.string_pipeline(base.frame, shapes.default_label(base.frame))
    assert shapes.register(platform, shapes.log_sklearn(two, inputs)) == 2
    result = platform.score(DAY_A)
    assert result.success, failure_messages(result)
    meta = materializations(result)["model_versions"]
    assert (meta["model_version"], meta["alias_holder_version"]) == ("1", "2")
    check = check_evaluations(result)["champion_passes_validation"]
    assert check.description is not None
    assert "differ from the prediction table's" in check.description


class _Pyfunc:
    def __init__(self, output: np.ndarray) -> None:
        self.output = output

    def predict(self, rows: Any) -> np.ndarray:
        return self.output


def test_integer_outputs_are_labels_never_probabilities() -> None:
    shape = model_shape("pyfunc", _Pyfunc(np.array([0, 1, 1, 0])))
    sample = lambda: pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0]})  # noqa: E731
    with pytest.raises(OutputMismatchError, match="returning labels"):
        bind_output(shape, OutputKind.PROBABILITY, "1", sample)
    spec, predict = bind_output(shape, OutputKind.LABEL, "1", sample)
    assert spec.kind is OutputKind.LABEL and list(predict(sample())) == [0, 1, 1, 0]


def test_classes_whose_columns_would_clash_are_refused() -> None:
    model = LogisticRegression().fit(
        np.random.default_rng(0).normal(size=(40, 2)), np.array(["A-1", "A 1"] * 20)
    )
    with pytest.raises(OutputMismatchError, match="clashing column names"):
        bind_output(model_shape("sklearn", model), OutputKind.CLASS_PROBABILITIES, "1", _no_sample)
