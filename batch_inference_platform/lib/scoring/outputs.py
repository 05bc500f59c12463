"""What a model's output means, and the prediction columns each meaning is written as.

A use case declares the kind of output it serves; the model's own output is bound to that kind
when a version is resolved (``lib.registry.adapters``), so the columns of a prediction table
never depend on how the model happens to be implemented.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc


class OutputKind(StrEnum):
    """The declared meaning of a prediction."""

    PROBABILITY = "probability"
    """Binary classification: the probability of the named positive class, column ``score``."""
    CLASS_PROBABILITIES = "class_probabilities"
    """Multi-class: one column ``score_<class>`` per class, plus ``label`` (the most probable)."""
    VALUE = "value"
    """Regression: the predicted value, column ``score``."""
    LABEL = "label"
    """Classification served as the predicted class only, column ``label``."""


SCORE_COLUMN = "score"
LABEL_COLUMN = "label"
SUM_TOLERANCE = 1e-6
"""How far a row of class probabilities may sum from 1."""


@dataclass(frozen=True)
class OutputSpec:
    """A declared output kind, bound to a model's classes (known once a version is loaded)."""

    kind: OutputKind
    positive_class: str = "1"
    """For ``probability``: the class whose probability is the score."""
    classes: tuple[str, ...] = field(default=())
    """For ``class_probabilities``: the model's classes, in the order of its columns."""

    @property
    def score_columns(self) -> list[str]:
        """The float64 columns of this output (none for ``label``)."""
        if self.kind is OutputKind.CLASS_PROBABILITIES:
            return [class_column(name) for name in self.classes]
        if self.kind is OutputKind.LABEL:
            return []
        return [SCORE_COLUMN]

    @property
    def has_label(self) -> bool:
        return self.kind in (OutputKind.CLASS_PROBABILITIES, OutputKind.LABEL)

    @property
    def is_probability(self) -> bool:
        """Whether every score column must lie in [0, 1]."""
        return self.kind in (OutputKind.PROBABILITY, OutputKind.CLASS_PROBABILITIES)

    @property
    def fields(self) -> list[pa.Field]:
        """The prediction table's output columns, in order."""
        fields: list[pa.Field] = [pa.field(name, pa.float64()) for name in self.score_columns]
        if self.has_label:
            fields.append(pa.field(LABEL_COLUMN, pa.string()))
        return fields

    def describe(self) -> str:
        """The expectation in words, for refusals: 'the probability of class 1'."""
        if self.kind is OutputKind.PROBABILITY:
            return f"the probability of class {self.positive_class}"
        if self.kind is OutputKind.CLASS_PROBABILITIES:
            return "one probability per class"
        if self.kind is OutputKind.VALUE:
            return "a regression value"
        return "a class label"

    def arrays(self, raw: Any, rows: int) -> list[pa.Array]:
        """The output columns for ``rows`` rows from the bound model's raw output.

        ``probability``/``value``: shape (rows,); ``class_probabilities``: (rows, classes);
        ``label``: (rows,) of any type (written as strings)."""
        if self.kind is OutputKind.LABEL:
            labels = np.asarray(raw, dtype=object).reshape(-1)
            _expect_rows(labels.shape, (rows,))
            return [_labels(labels)]
        values = np.asarray(raw, np.float64)
        if self.kind is OutputKind.CLASS_PROBABILITIES:
            _expect_rows(values.shape, (rows, len(self.classes)))
            best = np.argmax(np.where(np.isnan(values), -np.inf, values), axis=1)
            missing = np.asarray(np.isnan(values).any(axis=1), dtype=np.bool_)
            indices = pa.array(best, pa.int64(), mask=missing)  # pyright: ignore[reportCallIssue, reportArgumentType]
            label = pc.take(pa.array(self.classes, pa.string()), indices)
            columns = [pa.array(values[:, i]) for i in range(values.shape[1])]
            return [*columns, label]
        _expect_rows(values.shape, (rows,))
        return [pa.array(values)]

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "positive_class": self.positive_class,
            "classes": list(self.classes),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OutputSpec:
        return cls(OutputKind(data["kind"]), str(data["positive_class"]), tuple(data["classes"]))


def class_column(name: str) -> str:
    """The column a class's probability is written to: ``score_<class>``, made SQL-safe."""
    return f"{SCORE_COLUMN}_{re.sub(r'[^0-9A-Za-z_]', '_', name)}"


class OutputShapeError(ValueError):
    """A model's output does not have the shape its bound output kind promises."""


def _expect_rows(actual: tuple[int, ...], expected: tuple[int, ...]) -> None:
    if actual != expected:
        raise OutputShapeError(f"the model returned shape {actual}; expected {expected}")


def _labels(values: np.ndarray) -> pa.Array:
    """Labels of any type as strings (``str`` of each class, as class names are); None/NaN null."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    names = pa.array([str(value) for value in uniques], pa.string())
    indices = pa.array(codes, pa.int64(), mask=np.asarray(codes < 0))  # pyright: ignore[reportCallIssue, reportArgumentType]
    return pc.take(names, indices)
