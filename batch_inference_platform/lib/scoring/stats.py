"""What the predictions of one partition looked like, built batch by batch in bounded memory.

Every output kind has a *primary* number per row: the score (``probability``, ``value``) or the
probability of the predicted class (``class_probabilities``); ``label`` outputs have none and
are described by their label counts. Quantiles are never clamped: they come from the exact
[0, 1] histogram only while every probability lies in [0, 1], otherwise from a uniform sample.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batch_inference_platform.lib.quality.drift import ScoreHistogram, population_stability_index
from batch_inference_platform.lib.scoring.outputs import (
    LABEL_COLUMN,
    SUM_TOLERANCE,
    OutputKind,
    OutputSpec,
)

SAMPLE_SIZE = 4096
"""Primary scores kept (a uniform sample) for quantiles of unbounded outputs."""


@dataclass
class ScoreStats:
    """Counts, range, distribution and labels of one partition's predictions."""

    rows: int = 0
    non_finite: int = 0
    """Rows with a null, NaN or infinite score (or a null label)."""
    out_of_range: int = 0
    """Rows with a probability outside [0, 1] (probability kinds)."""
    not_summing: int = 0
    """Rows whose class probabilities do not sum to 1 (``class_probabilities``)."""
    min_score: float = float("inf")
    max_score: float = float("-inf")
    histogram: ScoreHistogram = field(default_factory=ScoreHistogram)
    """Primary scores on [0, 1] (values outside are counted in the edge bins)."""
    sample: np.ndarray = field(default_factory=lambda: np.empty(0))
    sample_keys: np.ndarray = field(default_factory=lambda: np.empty(0))
    labels: dict[str, int] = field(default_factory=dict)

    def add(self, batch: pa.RecordBatch, output: OutputSpec) -> None:
        """Account for one batch of predictions (written in ``output``'s columns)."""
        rows = batch.num_rows
        self.rows += rows
        names = output.score_columns
        scores = np.column_stack(
            [batch.column(n).to_numpy(zero_copy_only=False) for n in names] or [np.empty(rows)]
        )
        finite = np.isfinite(scores).all(axis=1) if names else np.ones(rows, bool)
        if output.has_label:
            labels = batch.column(LABEL_COLUMN)
            finite &= ~np.asarray(labels.is_null().to_numpy(zero_copy_only=False))
            counts = pc.value_counts(labels.drop_null())
            for item in counts.to_pylist():  # pyright: ignore[reportAttributeAccessIssue]
                key = str(item["values"])
                self.labels[key] = self.labels.get(key, 0) + int(item["counts"])
        self.non_finite += rows - int(finite.sum())
        if not names:
            return
        good = scores[finite]
        if output.is_probability:
            self.out_of_range += int(((good < 0) | (good > 1)).any(axis=1).sum())
        if output.kind is OutputKind.CLASS_PROBABILITIES:
            self.not_summing += int((np.abs(good.sum(axis=1) - 1.0) > SUM_TOLERANCE).sum())
        primary = good.max(axis=1) if good.shape[1] > 1 else good[:, 0]
        self.add_primary(primary)

    def add_primary(self, primary: np.ndarray) -> None:
        """Account for finite primary scores (range, histogram, sample)."""
        if primary.size:
            self.min_score = min(self.min_score, float(primary.min()))
            self.max_score = max(self.max_score, float(primary.max()))
        self.histogram.add(primary)
        keys = np.random.default_rng().random(primary.size)
        self._keep(np.concatenate([self.sample, primary]), np.concatenate([self.sample_keys, keys]))

    def merge(self, other: ScoreStats) -> None:
        """Add another partition's statistics (a run's totals)."""
        self.rows += other.rows
        self.non_finite += other.non_finite
        self.out_of_range += other.out_of_range
        self.not_summing += other.not_summing
        self.min_score = min(self.min_score, other.min_score)
        self.max_score = max(self.max_score, other.max_score)
        self.histogram.counts = self.histogram.counts + other.histogram.counts
        for key, count in other.labels.items():
            self.labels[key] = self.labels.get(key, 0) + count
        self._keep(
            np.concatenate([self.sample, other.sample]),
            np.concatenate([self.sample_keys, other.sample_keys]),
        )

    def quantiles(self, qs: Iterable[float]) -> dict[str, float]:
        """Primary-score quantiles, e.g. {"p50": 0.12}; empty for label outputs."""
        qs = list(qs)
        if self.histogram.total == 0:
            return {}
        if self.min_score >= 0 and self.max_score <= 1:
            return self.histogram.quantiles(qs)
        values = np.quantile(self.sample, qs)
        return {f"p{round(q * 100):02d}": float(v) for q, v in zip(qs, values, strict=True)}

    def _keep(self, values: np.ndarray, keys: np.ndarray) -> None:
        if len(values) > SAMPLE_SIZE:
            chosen = np.argpartition(keys, SAMPLE_SIZE)[:SAMPLE_SIZE]
            values, keys = values[chosen], keys[chosen]
        self.sample, self.sample_keys = values, keys

    def to_json(self) -> dict[str, Any]:
        seen = self.histogram.total > 0
        return {
            "rows": self.rows,
            "non_finite": self.non_finite,
            "out_of_range": self.out_of_range,
            "not_summing": self.not_summing,
            "min_score": self.min_score if seen else None,
            "max_score": self.max_score if seen else None,
            "histogram": self.histogram.counts.tolist(),
            "sample": self.sample.tolist(),
            "sample_keys": self.sample_keys.tolist(),
            "labels": dict(self.labels),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ScoreStats:
        return cls(
            rows=int(data["rows"]),
            non_finite=int(data["non_finite"]),
            out_of_range=int(data["out_of_range"]),
            not_summing=int(data["not_summing"]),
            min_score=float("inf") if data["min_score"] is None else float(data["min_score"]),
            max_score=float("-inf") if data["max_score"] is None else float(data["max_score"]),
            histogram=ScoreHistogram(np.asarray(data["histogram"], np.int64)),
            sample=np.asarray(data["sample"], np.float64),
            sample_keys=np.asarray(data["sample_keys"], np.float64),
            labels={str(k): int(v) for k, v in data["labels"].items()},
        )


def population_stability(
    reference: ScoreStats, current: ScoreStats, output: OutputSpec, bins: int
) -> float | None:
    """PSI of ``current`` against ``reference`` (None when either is empty).

    Probabilities: ``bins`` equal-width bins on [0, 1]; values: bins at the reference's
    quantiles; labels: the share of each label."""
    if output.kind is OutputKind.LABEL:
        names = sorted(set(reference.labels) | set(current.labels))
        expected = np.asarray([reference.labels.get(n, 0) for n in names], np.float64)
        actual = np.asarray([current.labels.get(n, 0) for n in names], np.float64)
    elif output.kind is OutputKind.VALUE:
        if not reference.sample.size or not current.sample.size:
            return None
        edges = np.quantile(reference.sample, np.linspace(0, 1, bins + 1)[1:-1])
        expected = np.bincount(np.searchsorted(edges, reference.sample), minlength=bins)
        actual = np.bincount(np.searchsorted(edges, current.sample), minlength=bins)
    else:
        return population_stability_index(reference.histogram, current.histogram, bins)
    if not expected.sum() or not actual.sum():
        return None
    expected = np.clip(expected / expected.sum(), 1e-6, None)
    actual = np.clip(actual / actual.sum(), 1e-6, None)
    return float(np.sum((actual - expected) * np.log(actual / expected)))
