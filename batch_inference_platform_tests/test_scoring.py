"""The scoring kernel with a real (tiny) LightGBM model, and the score-drift statistics."""

from __future__ import annotations

import datetime as dt

import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from batch_inference_platform.lib.features.contract import MODEL_FEATURES
from batch_inference_platform.lib.features.synthetic import generate_partition
from batch_inference_platform.lib.quality.drift import (
    FINE_BINS,
    ScoreHistogram,
    population_stability_index,
)
from batch_inference_platform.lib.quality.rules import to_canonical
from batch_inference_platform.lib.registry.adapters import model_shape
from batch_inference_platform.lib.registry.loader import LoadedModel, ServingScorer, bind
from batch_inference_platform.lib.scoring.inputs import InputColumn, InputPlan, feature_matrix
from batch_inference_platform.lib.scoring.kernel import (
    ScoringStamp,
    prediction_schema,
    score_batch,
)
from batch_inference_platform.lib.scoring.outputs import SCORE_COLUMN, OutputKind, OutputSpec

DAY = dt.date(2026, 11, 2)
STAMP = ScoringStamp(run_id="run-42", scored_at=dt.datetime(2026, 11, 3, 4, 5, tzinfo=dt.UTC))
LABEL = "defaulted"


@pytest.fixture(scope="module")
def raw() -> pa.RecordBatch:
    """One small synthetic partition, with its label."""
    return next(generate_partition(DAY, 2000))


@pytest.fixture(scope="module")
def booster(raw: pa.RecordBatch) -> lgb.Booster:
    matrix = feature_matrix(raw, MODEL_FEATURES)
    labels = raw.column(LABEL).to_numpy()
    return lgb.train(
        {"objective": "binary", "num_leaves": 7, "verbose": -1, "num_threads": 1, "seed": 1},
        lgb.Dataset(matrix, labels, feature_name=list(MODEL_FEATURES)),
        num_boost_round=10,
    )


@pytest.fixture
def batch(raw: pa.RecordBatch) -> pa.RecordBatch:
    """A validated-shaped batch (contract columns in contract types)."""
    return to_canonical(raw.slice(0, 500))


PREDICTION_SCHEMA = prediction_schema(OutputSpec(OutputKind.PROBABILITY))


def _scorer(model: object, flavor: str = "lightgbm") -> ServingScorer:
    """``model`` served natively as the probability of class 1, on a float64 matrix."""
    inputs = InputPlan(tuple(InputColumn(name, "double") for name in MODEL_FEATURES), matrix=True)
    shape = model_shape(flavor, model)
    loaded = LoadedModel("credit_risk_test", 3, flavor, model, inputs, shape, "test")
    return bind(loaded, OutputSpec(OutputKind.PROBABILITY), lambda: [])


def _numpy_matrix(batch: pa.RecordBatch) -> np.ndarray:
    """The feature matrix built independently of the kernel."""
    columns = [
        np.asarray(batch.column(name).to_numpy(zero_copy_only=False), dtype=np.float64)
        for name in MODEL_FEATURES
    ]
    return np.column_stack(columns)


def test_scores_equal_the_booster_on_the_same_matrix(
    booster: lgb.Booster, batch: pa.RecordBatch
) -> None:
    out = score_batch(_scorer(booster), batch, STAMP)
    expected = np.asarray(booster.predict(_numpy_matrix(batch)))
    np.testing.assert_array_equal(out.column(SCORE_COLUMN).to_numpy(), expected)
    scores = out.column(SCORE_COLUMN).to_numpy()
    assert ((scores > 0) & (scores < 1)).all()
    assert scores.std() > 0


def test_output_rows_and_schema(booster: lgb.Booster, batch: pa.RecordBatch) -> None:
    out = score_batch(_scorer(booster), batch, STAMP)
    assert out.schema.equals(PREDICTION_SCHEMA)
    assert out.num_rows == batch.num_rows
    assert out.column("customer_id").equals(batch.column("customer_id"))
    assert out.column("event_date").equals(batch.column("event_date"))
    assert set(out.column("model_name").to_pylist()) == {"credit_risk_test"}
    assert set(out.column("model_version").to_pylist()) == {3}
    assert set(out.column("run_id").to_pylist()) == {"run-42"}
    assert set(out.column("scored_at").to_pylist()) == {STAMP.scored_at}


def test_nulls_become_nan_features(booster: lgb.Booster, batch: pa.RecordBatch) -> None:
    rows = batch.num_rows
    mask = pa.array(np.arange(rows) % 3 == 0)
    columns = {}
    for name in ("annual_income", "credit_score", "months_since_last_delinquency"):
        column = batch.column(name)
        columns[name] = pc.if_else(mask, pa.scalar(None, column.type), column)
    holes = batch
    for name, column in columns.items():
        holes = holes.set_column(holes.schema.get_field_index(name), name, column)

    matrix = feature_matrix(holes, MODEL_FEATURES)
    nulled = np.asarray(mask)
    for name in columns:
        values = matrix[:, MODEL_FEATURES.index(name)]
        assert np.isnan(values[nulled]).all()
        expected_nan = np.asarray(batch.column(name).is_null()) | nulled
        np.testing.assert_array_equal(np.isnan(values), expected_nan)

    out = score_batch(_scorer(booster), holes, STAMP)
    scores = out.column(SCORE_COLUMN).to_numpy()
    assert np.isfinite(scores).all()
    np.testing.assert_array_equal(scores, np.asarray(booster.predict(_numpy_matrix(holes))))
    assert not np.array_equal(scores, np.asarray(booster.predict(_numpy_matrix(batch))))


@pytest.mark.filterwarnings("ignore:X does not have valid feature names")
def test_sklearn_api_model_scores_the_positive_class(raw: pa.RecordBatch) -> None:
    matrix = feature_matrix(raw, MODEL_FEATURES)
    model = lgb.LGBMClassifier(n_estimators=5, num_leaves=7, verbose=-1, n_jobs=1)
    model.fit(matrix, raw.column(LABEL).to_numpy())
    batch = to_canonical(raw.slice(0, 100))
    out = score_batch(_scorer(model), batch, STAMP)
    expected = np.asarray(model.predict_proba(_numpy_matrix(batch)))[:, 1]
    np.testing.assert_allclose(out.column(SCORE_COLUMN).to_numpy(), expected)


class _OneShort:
    """A regressor-like model that drops a row."""

    def get_params(self) -> dict:
        return {}

    def fit(self) -> None: ...

    def predict(self, features: np.ndarray) -> np.ndarray:
        return np.zeros(len(features) - 1)


def test_wrong_output_shape_names_the_model(batch: pa.RecordBatch) -> None:
    inputs = InputPlan(tuple(InputColumn(name, "double") for name in MODEL_FEATURES), matrix=True)
    model = _OneShort()
    loaded = LoadedModel(
        "credit_risk_test", 3, "sklearn", model, inputs, model_shape("sklearn", model), "t"
    )
    scorer = bind(loaded, OutputSpec(OutputKind.VALUE), lambda: [])
    with pytest.raises(ValueError, match=r"model credit_risk_test v3: the model returned shape"):
        score_batch(scorer, batch, STAMP)


# --------------------------------------------------------------------------- drift


def _histogram(scores: np.ndarray) -> ScoreHistogram:
    return ScoreHistogram.of(np.array_split(scores, 7))


def test_psi_is_zero_for_identical_distributions() -> None:
    scores = np.random.default_rng(1).beta(2, 8, 20_000)
    psi = population_stability_index(_histogram(scores), _histogram(scores.copy()), 10)
    assert psi == pytest.approx(0.0, abs=1e-12)
    resampled = np.random.default_rng(2).beta(2, 8, 20_000)
    assert population_stability_index(_histogram(scores), _histogram(resampled), 10) < 0.01


def test_psi_flags_a_shifted_distribution() -> None:
    rng = np.random.default_rng(3)
    reference = _histogram(rng.beta(2, 8, 20_000))
    shifted = _histogram(rng.beta(4, 6, 20_000))
    psi = population_stability_index(reference, shifted, 10)
    assert psi > 0.2
    assert population_stability_index(shifted, reference, 10) > 0.2


def test_psi_bins_must_divide_the_histogram() -> None:
    histogram = _histogram(np.linspace(0, 1, 100))
    with pytest.raises(ValueError, match="must divide"):
        population_stability_index(histogram, histogram, 7)


def test_histogram_ignores_non_finite_scores() -> None:
    histogram = ScoreHistogram.of([np.array([0.1, np.nan, np.inf, 0.9, 1.0, 0.0])])
    assert histogram.total == 4
    assert histogram.counts[[0, 100, 900, FINE_BINS - 1]].tolist() == [1, 1, 1, 1]  # 1.0: last


def test_quantiles_are_monotone_and_accurate() -> None:
    scores = np.random.default_rng(4).uniform(0, 1, 50_000)
    quantiles = _histogram(scores).quantiles((0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99))
    assert list(quantiles) == ["p01", "p05", "p25", "p50", "p75", "p95", "p99"]
    values = list(quantiles.values())
    assert values == sorted(values)
    assert all(0 < v <= 1 for v in values)
    for name, q in zip(quantiles, (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99), strict=True):
        assert quantiles[name] == pytest.approx(np.quantile(scores, q), abs=0.01)


def test_quantiles_of_an_empty_histogram_do_not_fail() -> None:
    values = list(ScoreHistogram().quantiles((0.1, 0.5, 0.9)).values())
    assert values == sorted(values)


def test_an_optional_input_the_table_lacks_is_fed_as_nan(batch: pa.RecordBatch) -> None:
    plan = InputPlan(
        (InputColumn("age", "long"), InputColumn("not_in_table", "double", required=False)),
        matrix=True,
    )
    matrix = plan.prepare(batch)
    assert matrix.shape == (batch.num_rows, 2)
    assert np.isnan(matrix[:, 1]).all()
    np.testing.assert_array_equal(matrix[:, 0], batch.column("age").to_numpy())
