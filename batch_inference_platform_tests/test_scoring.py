"""The scoring kernel with a real (tiny) LightGBM model, prediction schemas built from a
deployment's identity columns, and the score-drift statistics."""

from __future__ import annotations

import datetime as dt

import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from batch_inference_platform.lib.deployments.partitioning import Partitioning, PartitionKind
from batch_inference_platform.lib.features.contract import Column, Kind
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
    PROVENANCE_FIELDS,
    ScoringStamp,
    identity_schema,
    prediction_schema,
    score_batch,
)
from batch_inference_platform.lib.scoring.outputs import (
    LABEL_COLUMN,
    SCORE_COLUMN,
    OutputKind,
    OutputSpec,
)
from batch_inference_platform.lib.scoring.request import (
    EngineResult,
    ModelRef,
    PartitionError,
    PartitionReport,
    ScoringRequest,
)
from batch_inference_platform.lib.scoring.stats import ScoreStats

from .contracts import CREDIT_MODEL_FEATURES, HOURLY, LABEL, credit_batch, credit_contract

MODEL_FEATURES = CREDIT_MODEL_FEATURES
STAMP = ScoringStamp(run_id="run-42", scored_at=dt.datetime(2026, 11, 3, 4, 5, tzinfo=dt.UTC))
CONTRACT = credit_contract()
IDENTITY = identity_schema(CONTRACT.validated_schema(), CONTRACT.identity)


@pytest.fixture(scope="module")
def raw() -> pa.RecordBatch:
    """One small credit-like partition, with its label."""
    return credit_batch(2000)


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
    return to_canonical(raw.slice(0, 500), CONTRACT)


PREDICTION_SCHEMA = prediction_schema(IDENTITY, OutputSpec(OutputKind.PROBABILITY))


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
    out = score_batch(_scorer(booster), batch, STAMP, IDENTITY)
    expected = np.asarray(booster.predict(_numpy_matrix(batch)))
    np.testing.assert_array_equal(out.column(SCORE_COLUMN).to_numpy(), expected)
    scores = out.column(SCORE_COLUMN).to_numpy()
    assert ((scores > 0) & (scores < 1)).all()
    assert scores.std() > 0


def test_output_rows_and_schema(booster: lgb.Booster, batch: pa.RecordBatch) -> None:
    out = score_batch(_scorer(booster), batch, STAMP, IDENTITY)
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
        values = matrix[:, list(MODEL_FEATURES).index(name)]
        assert np.isnan(values[nulled]).all()
        expected_nan = np.asarray(batch.column(name).is_null()) | nulled
        np.testing.assert_array_equal(np.isnan(values), expected_nan)

    out = score_batch(_scorer(booster), holes, STAMP, IDENTITY)
    scores = out.column(SCORE_COLUMN).to_numpy()
    assert np.isfinite(scores).all()
    np.testing.assert_array_equal(scores, np.asarray(booster.predict(_numpy_matrix(holes))))
    assert not np.array_equal(scores, np.asarray(booster.predict(_numpy_matrix(batch))))


@pytest.mark.filterwarnings("ignore:X does not have valid feature names")
def test_sklearn_api_model_scores_the_positive_class(raw: pa.RecordBatch) -> None:
    matrix = feature_matrix(raw, MODEL_FEATURES)
    model = lgb.LGBMClassifier(n_estimators=5, num_leaves=7, verbose=-1, n_jobs=1)
    model.fit(matrix, raw.column(LABEL).to_numpy())
    batch = to_canonical(raw.slice(0, 100), CONTRACT)
    out = score_batch(_scorer(model), batch, STAMP, IDENTITY)
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
        score_batch(scorer, batch, STAMP, IDENTITY)


# --------------------------------------------------------------------------- identity


class _ThreeClasses:
    """A model giving the same three class probabilities to every row."""

    classes_ = np.array(["low", "mid", "high"])

    def get_params(self) -> dict:
        return {}

    def fit(self) -> None: ...

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        return np.tile([0.2, 0.5, 0.3], (len(features), 1))

    def predict(self, features: np.ndarray) -> np.ndarray:
        return np.full(len(features), "mid")


def test_class_probabilities_prediction_schema_carries_a_string_key() -> None:
    contract = credit_contract(
        HOURLY,
        key=(
            Column("region_code", Kind.STRING, required=True),
            Column("account_id", Kind.STRING, required=True),
        ),
    )
    identity = identity_schema(contract.validated_schema(), contract.identity)
    output = OutputSpec(OutputKind.CLASS_PROBABILITIES, classes=("low", "mid", "high"))
    schema = prediction_schema(identity, output)
    assert schema.names == [
        "region_code",
        "account_id",
        "event_hour",
        "score_low",
        "score_mid",
        "score_high",
        LABEL_COLUMN,
        *(field.name for field in PROVENANCE_FIELDS),
    ]
    assert schema.field("account_id").type == pa.string()
    assert schema.field("event_hour").type == pa.timestamp("us", tz="UTC")
    assert not schema.field("account_id").nullable

    hour = dt.datetime(2026, 11, 1, 6, tzinfo=dt.UTC)
    keys = {
        "region_code": pa.array(["eu", "us", "eu"], pa.large_string()),
        "account_id": pa.array(["a", "a", "b"]),
    }
    raw = credit_batch(
        3,
        keys=keys,
        day=hour,
        partition_column="event_hour",
        partition_type=pa.timestamp("us", tz="UTC"),
    )
    batch = to_canonical(raw, contract)
    inputs = InputPlan(tuple(InputColumn(name, "double") for name in MODEL_FEATURES), matrix=True)
    model = _ThreeClasses()
    loaded = LoadedModel("tiers", 1, "sklearn", model, inputs, model_shape("sklearn", model), "t")
    scorer = bind(loaded, output, lambda: [])
    out = score_batch(scorer, batch, STAMP, identity)
    assert out.schema.equals(schema)
    assert out.column("account_id").to_pylist() == ["a", "a", "b"]
    assert out.column("region_code").to_pylist() == ["eu", "us", "eu"]
    assert set(out.column("event_hour").to_pylist()) == {hour}
    assert set(out.column(LABEL_COLUMN).to_pylist()) == {"mid"}


def test_unpartitioned_prediction_schema_is_keys_then_outputs() -> None:
    contract = credit_contract(Partitioning(PartitionKind.NONE))
    identity = identity_schema(contract.validated_schema(), contract.identity)
    schema = prediction_schema(identity, OutputSpec(OutputKind.VALUE))
    assert schema.names[:2] == ["customer_id", SCORE_COLUMN]
    assert schema.field("customer_id").type == pa.int64()


def test_request_and_results_round_trip_as_json() -> None:
    request = ScoringRequest(
        keys=["2026-11-01-06:00", "2026-11-01-07:00"],
        identity=["account_id", "event_hour"],
        partitioning=HOURLY.to_json(),
        validated_uri="/lake/validated/x",
        predictions_uri="/lake/predictions/x",
        model=ModelRef("m", 2, "file:///mlruns", ""),
        feature_names=["event_hour", "age"],
        output=OutputSpec(OutputKind.PROBABILITY).to_json(),
        dagster_run_id="run",
        model_cache_dir="/cache",
    )
    again = ScoringRequest.from_json(request.to_json())
    assert again == request
    assert again.partition_spec == HOURLY
    assert again.columns == ["account_id", "event_hour", "age"]
    stats = ScoreStats()
    result = EngineResult(
        scored={"2026-11-01-06:00": PartitionReport("2026-11-01-06:00", 5, 5, 3, 0.5, stats)},
        errors=[PartitionError("2026-11-01-07:00", "unreadable", ["part-0.parquet"])],
    )
    back = EngineResult.from_json(result.to_json())
    assert list(back.scored) == ["2026-11-01-06:00"]
    assert back.scored["2026-11-01-06:00"].rows == 5
    assert back.errors == result.errors


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
