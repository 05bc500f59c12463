"""The in-process scoring engine: one validated partition in, one prediction partition out.

Three stages overlap - reading Delta and building the feature matrix (a prefetch thread),
scoring (compiled or native model, a second prefetch thread) and writing Delta (delta-rs) -
while memory holds only a few batches, whatever the partition's size. The partition is
replaced in one Delta commit.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from batch_inference_platform.lib.features.contract import DATE_COLUMN, KEY_COLUMN
from batch_inference_platform.lib.lake.prefetch import prefetch
from batch_inference_platform.lib.lake.tables import DeltaLocation, Snapshot, replace_partition
from batch_inference_platform.lib.quality.drift import ScoreHistogram
from batch_inference_platform.lib.scoring.kernel import (
    PREDICTION_SCHEMA,
    SCORE_COLUMN,
    Scorer,
    ScoringStamp,
    feature_matrix,
    score_features,
)

DEFAULT_BATCH_ROWS = 65_536


@dataclass
class ScoreStats:
    """What the scores looked like on their way to the table."""

    histogram: ScoreHistogram = field(default_factory=ScoreHistogram)
    non_finite: int = 0
    out_of_range: int = 0
    min_score: float = float("inf")
    max_score: float = float("-inf")

    def watch(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            scores = batch.column(SCORE_COLUMN).to_numpy(zero_copy_only=False)
            finite = scores[np.isfinite(scores)]
            self.non_finite += len(scores) - len(finite)  # nulls arrive as NaN
            self.out_of_range += int(((finite < 0) | (finite > 1)).sum())
            if finite.size:
                self.min_score = min(self.min_score, float(finite.min()))
                self.max_score = max(self.max_score, float(finite.max()))
            self.histogram.add(finite)
            yield batch


@dataclass(frozen=True)
class PartitionScored:
    """One committed prediction partition and how it went."""

    day: dt.date
    input_rows: int
    rows: int
    delta_version: int
    seconds: float
    stats: ScoreStats

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def score_partition(
    scorer: Scorer,
    source: Snapshot,
    target: DeltaLocation,
    day: dt.date,
    stamp: ScoringStamp,
    *,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    commit_metadata: Mapping[str, str] | None = None,
) -> PartitionScored:
    """Score the ``day`` partition of ``source`` into ``target`` (one transaction)."""
    started = time.perf_counter()
    stats = ScoreStats()
    columns = [KEY_COLUMN, DATE_COLUMN, *scorer.feature_names]
    # Stage 1 (reader thread): decode Parquet and lay features out row-major.
    prepared = prefetch(
        (batch, feature_matrix(batch, scorer.feature_names))
        for batch in source.batches(day, columns=columns, batch_rows=batch_rows)
        if batch.num_rows
    )
    # Stage 2 (scoring thread, inside replace_partition's prefetch): predict and stamp.
    scored = (score_features(scorer, batch, features, stamp) for batch, features in prepared)
    commit = replace_partition(
        target,
        day,
        stats.watch(scored),
        PREDICTION_SCHEMA,
        commit_metadata=commit_metadata,
    )
    return PartitionScored(
        day=day,
        input_rows=source.count(day),
        rows=commit.rows,
        delta_version=commit.version,
        seconds=time.perf_counter() - started,
        stats=stats,
    )
