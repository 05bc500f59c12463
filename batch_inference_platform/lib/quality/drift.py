"""Score distributions: streaming histograms, quantiles and the population stability index."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

FINE_BINS = 1000
"""Resolution of the streaming histogram on [0, 1]; quantiles are exact to 1/FINE_BINS."""


class ScoreHistogram:
    """Counts of scores in ``FINE_BINS`` equal bins on [0, 1], built batch by batch."""

    def __init__(self, counts: np.ndarray | None = None) -> None:
        self.counts = np.zeros(FINE_BINS, np.int64) if counts is None else counts

    @classmethod
    def of(cls, batches: Iterable[np.ndarray]) -> ScoreHistogram:
        histogram = cls()
        for scores in batches:
            histogram.add(scores)
        return histogram

    def add(self, scores: np.ndarray) -> None:
        finite = scores[np.isfinite(scores)]
        bins = np.clip((finite * FINE_BINS).astype(np.int64), 0, FINE_BINS - 1)
        self.counts += np.bincount(bins, minlength=FINE_BINS)

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def quantiles(self, qs: Iterable[float]) -> dict[str, float]:
        """Score quantiles, e.g. {"p50": 0.12}, read off the cumulative histogram."""
        cumulative = np.cumsum(self.counts)
        result = {}
        for q in qs:
            index = int(np.searchsorted(cumulative, q * max(self.total, 1), side="left"))
            result[f"p{round(q * 100):02d}"] = min(index + 1, FINE_BINS) / FINE_BINS
        return result

    def coarse(self, bins: int) -> np.ndarray:
        """Counts in ``bins`` equal-width bins (``bins`` must divide FINE_BINS)."""
        if FINE_BINS % bins:
            raise ValueError(f"drift bins must divide {FINE_BINS}, got {bins}")
        return self.counts.reshape(bins, -1).sum(axis=1)


def population_stability_index(
    reference: ScoreHistogram, current: ScoreHistogram, bins: int
) -> float:
    """PSI between two score distributions; above ~0.2 is commonly read as a material shift."""
    expected = _shares(reference.coarse(bins))
    actual = _shares(current.coarse(bins))
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def _shares(counts: np.ndarray) -> np.ndarray:
    shares = counts / max(int(counts.sum()), 1)
    return np.clip(shares, 1e-6, None)
