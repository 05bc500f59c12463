"""The in-process scoring engine: one validated partition in, one prediction partition out.

Three stages overlap - reading Delta and building the feature matrix (a prefetch thread),
scoring (compiled or native model, a second prefetch thread) and writing Delta (delta-rs) -
while memory holds only a few batches, whatever the partition's size. The partition is
replaced in one Delta commit.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable, Iterator, Mapping

import pyarrow as pa

from batch_inference_platform.lib.features.contract import DATE_COLUMN, KEY_COLUMN
from batch_inference_platform.lib.lake.prefetch import prefetch
from batch_inference_platform.lib.lake.tables import DeltaLocation, Snapshot, replace_partition
from batch_inference_platform.lib.scoring.kernel import (
    PREDICTION_SCHEMA,
    SCORE_COLUMN,
    Scorer,
    ScoringStamp,
    feature_matrix,
    score_features,
)
from batch_inference_platform.lib.scoring.request import (
    EngineResult,
    PartitionError,
    PartitionReport,
    ScoreStats,
    ScoringRequest,
)

DEFAULT_BATCH_ROWS = 65_536


def score_partition(
    scorer: Scorer,
    source: Snapshot,
    target: DeltaLocation,
    day: dt.date,
    stamp: ScoringStamp,
    *,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    commit_metadata: Mapping[str, str] | None = None,
) -> PartitionReport:
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
        _watched(scored, stats),
        PREDICTION_SCHEMA,
        commit_metadata=commit_metadata,
    )
    return PartitionReport(
        day=day,
        input_rows=source.count(day),
        rows=commit.rows,
        delta_version=commit.version,
        seconds=time.perf_counter() - started,
        stats=stats,
    )


def score_request(
    scorer: Scorer,
    source: Snapshot,
    target: DeltaLocation,
    request: ScoringRequest,
    stamp: ScoringStamp,
    *,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    on_scored: Callable[[PartitionReport], None] = lambda report: None,
) -> EngineResult:
    """Score every day of ``request``; a day that fails (an unreadable file, say) is reported
    with the files to blame and the other days still commit."""
    result = EngineResult()
    for day in request.dates:
        try:
            report = score_partition(
                scorer,
                source,
                target,
                day,
                stamp,
                batch_rows=batch_rows,
                commit_metadata=request.commit_metadata.get(day.isoformat()),
            )
        except Exception as error:  # reported with the files to blame; the step still fails
            try:
                broken = source.unreadable_files(day)
            except Exception:  # the diagnosis must not hide the error it explains
                broken = {}
            result.errors.append(PartitionError(day, str(error), sorted(broken)))
            continue
        result.scored[day] = report
        on_scored(report)
    return result


def _watched(batches: Iterable[pa.RecordBatch], stats: ScoreStats) -> Iterator[pa.RecordBatch]:
    """Pass batches through, accounting for their scores in ``stats``."""
    for batch in batches:
        stats.add(batch.column(SCORE_COLUMN).to_numpy(zero_copy_only=False))
        yield batch
