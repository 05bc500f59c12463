"""The smoke test a version passes before it serves, on small in-memory scorers."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from batch_inference_platform.lib.registry.adapters import OutputMismatchError
from batch_inference_platform.lib.registry.smoke import smoke_test
from batch_inference_platform.lib.scoring.inputs import InputColumn, InputPlan
from batch_inference_platform.lib.scoring.outputs import OutputKind, OutputSpec

SAMPLE = pa.record_batch({"a": pa.array(np.arange(10.0)), "b": pa.array(np.arange(10.0, 20.0))})
PROBABILITY = OutputSpec(OutputKind.PROBABILITY)
CLASSES = OutputSpec(OutputKind.CLASS_PROBABILITIES, classes=("x", "y"))


class _Scorer:
    model_name = "m"
    model_version = 1
    inputs = InputPlan((InputColumn("a", "double"), InputColumn("b", "double")), matrix=True)

    def __init__(self, predict: Callable[[np.ndarray], Any], output: OutputSpec) -> None:
        self._predict = predict
        self.output = output

    def predict(self, model_input: Any) -> Any:
        return self._predict(model_input)


def _fails(error: Exception) -> Callable[[np.ndarray], np.ndarray]:
    def predict(features: np.ndarray) -> np.ndarray:
        raise error

    return predict


def test_a_scorer_with_one_finite_probability_per_row_passes() -> None:
    result = smoke_test(
        lambda: _Scorer(lambda x: x[:, 0] / 20, PROBABILITY), SAMPLE, max_load_seconds=60
    )
    assert result.problems == []
    assert result.rows == 10
    assert result.output == PROBABILITY


@pytest.mark.parametrize(
    ("predict", "output", "problem"),
    [
        (
            lambda x: np.where(x[:, 0] > 5, np.nan, 0.5),
            PROBABILITY,
            "4 of 10 smoke predictions are null or not finite",
        ),
        (lambda x: np.full(10, np.inf), PROBABILITY, "10 of 10 smoke predictions are null"),
        (lambda x: x, PROBABILITY, "predict fails: OutputShapeError: the model returned shape"),
        (lambda x: x[:5, 0], PROBABILITY, "predict fails: OutputShapeError"),
        (
            lambda x: x[:, 0],
            PROBABILITY,
            "8 of 10 smoke probabilities are outside [0, 1] (min 0, max 9)",
        ),
        (lambda x: np.full((10, 2), 0.7), CLASSES, "10 of 10 rows' class probabilities do not"),
        (
            _fails(ValueError("feature 3 is NaN")),
            PROBABILITY,
            "predict fails: ValueError: feature 3 is NaN",
        ),
    ],
)
def test_bad_predictions_are_named(
    predict: Callable[[np.ndarray], np.ndarray], output: OutputSpec, problem: str
) -> None:
    result = smoke_test(lambda: _Scorer(predict, output), SAMPLE, max_load_seconds=60)
    assert len(result.problems) == 1
    assert result.problems[0].startswith(problem), result.problems


def test_a_regression_value_may_leave_the_unit_range() -> None:
    output = OutputSpec(OutputKind.VALUE)
    result = smoke_test(
        lambda: _Scorer(lambda x: x[:, 0] * 100, output), SAMPLE, max_load_seconds=60
    )
    assert result.problems == []


def test_a_version_that_does_not_load_is_refused_with_the_reason() -> None:
    def load() -> _Scorer:
        raise OSError("artifact store unreachable")

    result = smoke_test(load, SAMPLE, max_load_seconds=60)
    assert result.problems == ["does not load: OSError: artifact store unreachable"]


def test_an_output_that_does_not_fit_the_kind_is_refused_with_both_named() -> None:
    def load() -> _Scorer:
        raise OutputMismatchError("3 classes; this use case expects the probability of class 1")

    result = smoke_test(load, SAMPLE, max_load_seconds=60)
    assert result.problems == [
        "output: 3 classes; this use case expects the probability of class 1"
    ]


def test_a_slow_load_is_refused() -> None:
    def load() -> _Scorer:
        time.sleep(0.05)
        return _Scorer(lambda x: x[:, 0] / 20, PROBABILITY)

    result = smoke_test(load, SAMPLE, max_load_seconds=0.01)
    assert len(result.problems) == 1
    assert result.problems[0].endswith("over the 0.01 s limit")


def test_no_rows_to_score_is_a_problem() -> None:
    result = smoke_test(
        lambda: _Scorer(lambda x: x[:, 0], PROBABILITY), SAMPLE.slice(0, 0), max_load_seconds=60
    )
    assert result.problems == ["no validated rows to score"]
