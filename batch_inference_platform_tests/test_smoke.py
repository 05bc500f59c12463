"""The smoke test a version passes before it serves, on small in-memory scorers."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import pytest

from batch_inference_platform.lib.registry.smoke import smoke_test

SAMPLE = np.arange(20.0).reshape(10, 2)


class _Scorer:
    model_name = "m"
    model_version = 1
    feature_names: Sequence[str] = ("a", "b")

    def __init__(self, predict: Callable[[np.ndarray], np.ndarray]) -> None:
        self._predict = predict

    def predict(self, features: np.ndarray) -> np.ndarray:
        return self._predict(features)


def _fails(error: Exception) -> Callable[[np.ndarray], np.ndarray]:
    def predict(features: np.ndarray) -> np.ndarray:
        raise error

    return predict


def test_a_scorer_with_one_finite_score_per_row_passes() -> None:
    result = smoke_test(lambda: _Scorer(lambda x: x[:, 0] / 20), SAMPLE, max_load_seconds=60)
    assert result.problems == []
    assert result.rows == 10


@pytest.mark.parametrize(
    ("predict", "problem"),
    [
        (lambda x: np.where(x[:, 0] > 10, np.nan, 0.5), "4 of 10 smoke scores are not finite"),
        (lambda x: np.full(10, np.inf), "10 of 10 smoke scores are not finite"),
        (lambda x: x, "scores have shape (10, 2) for 10 rows, not (10,)"),
        (lambda x: x[:5, 0], "scores have shape (5,) for 10 rows, not (10,)"),
        (lambda x: np.array(["a"] * 10), "scores are <U1, not numbers"),
        (_fails(ValueError("feature 3 is NaN")), "predict fails: feature 3 is NaN"),
    ],
)
def test_bad_scores_are_named(predict: Callable[[np.ndarray], np.ndarray], problem: str) -> None:
    assert smoke_test(lambda: _Scorer(predict), SAMPLE, max_load_seconds=60).problems == [problem]


def test_a_version_that_does_not_load_is_refused_with_the_reason() -> None:
    def load() -> _Scorer:
        raise OSError("artifact store unreachable")

    result = smoke_test(load, SAMPLE, max_load_seconds=60)
    assert result.problems == ["does not load: artifact store unreachable"]


def test_a_slow_load_is_refused() -> None:
    def load() -> _Scorer:
        time.sleep(0.05)
        return _Scorer(lambda x: x[:, 0])

    result = smoke_test(load, SAMPLE, max_load_seconds=0.01)
    assert len(result.problems) == 1
    assert result.problems[0].endswith("over the 0.01 s limit")


def test_no_rows_to_score_is_a_problem() -> None:
    result = smoke_test(lambda: _Scorer(lambda x: x[:, 0]), SAMPLE[:0], max_load_seconds=60)
    assert result.problems == ["no validated rows to score"]
