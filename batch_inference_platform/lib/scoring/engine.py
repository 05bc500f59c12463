"""The in-process scoring engine: one validated partition in, one prediction partition out.

Three stages overlap - reading Delta and building the feature matrix (a prefetch thread),
scoring (compiled or native model, a second prefetch thread) and writing Delta (delta-rs) -
while memory holds only a few batches, whatever the partition's size. The partition is
replaced in one Delta commit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping

import pyarrow as pa

from batch_inference_platform.lib.deployments.partitioning import Partitioning
from batch_inference_platform.lib.lake.errors import describe_error
from batch_inference_platform.lib.lake.prefetch import prefetch
from batch_inference_platform.lib.lake.tables import DeltaLocation, Snapshot, replace_partition
from batch_inference_platform.lib.scoring.kernel import (
    Scorer,
    ScoringStamp,
    identity_schema,
    prediction_schema,
    score_prepared,
)
from batch_inference_platform.lib.scoring.outputs import OutputSpec
from batch_inference_platform.lib.scoring.request import (
    EngineResult,
    PartitionError,
    PartitionReport,
    ScoringRequest,
)
from batch_inference_platform.lib.scoring.stats import ScoreStats

DEFAULT_BATCH_ROWS = 65_536


def score_partition(
    scorer: Scorer,
    source: Snapshot,
    target: DeltaLocation,
    partitioning: Partitioning,
    key: str,
    stamp: ScoringStamp,
    *,
    identity: list[str],
    batch_rows: int = DEFAULT_BATCH_ROWS,
    commit_metadata: Mapping[str, str] | None = None,
) -> PartitionReport:
    """Score partition ``key`` of ``source`` into ``target`` (one transaction); every
    prediction row carries the ``identity`` columns (keys, partition column) of its source row."""
    started = time.perf_counter()
    stats = ScoreStats()
    fields = identity_schema(source.schema, identity)
    inputs = [name for name in scorer.inputs.present(source.schema) if name not in identity]
    # Stage 1 (reader thread): decode Parquet and build the model's input (matrix or frame).
    prepared = prefetch(
        (batch, scorer.inputs.prepare(batch))
        for batch in source.batches(key, columns=[*identity, *inputs], batch_rows=batch_rows)
        if batch.num_rows
    )
    # Stage 2 (scoring thread, inside replace_partition's prefetch): predict and stamp.
    scored = (
        score_prepared(scorer, batch, model_input, stamp, fields) for batch, model_input in prepared
    )
    commit = replace_partition(
        target,
        partitioning,
        key,
        _watched(scored, stats, scorer.output),
        prediction_schema(fields, scorer.output),
        commit_metadata=commit_metadata,
    )
    return PartitionReport(
        key=key,
        input_rows=source.count(key),
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
    """Score every partition of ``request``; a partition that fails (an unreadable file, say)
    is reported with the files to blame and the others still commit."""
    result = EngineResult()
    partitioning = request.partition_spec
    for key in request.keys:
        try:
            report = score_partition(
                scorer,
                source,
                target,
                partitioning,
                key,
                stamp,
                identity=request.identity,
                batch_rows=batch_rows,
                commit_metadata=request.commit_metadata.get(key),
            )
        except Exception as error:  # reported with the files to blame; the step still fails
            reason, files = describe_error(error)
            if not files:
                try:
                    files = sorted(source.unreadable_files(key))
                except Exception:  # the diagnosis must not hide the error it explains
                    files = []
            result.errors.append(PartitionError(key, reason, files))
            continue
        result.scored[key] = report
        on_scored(report)
    return result


def _watched(
    batches: Iterable[pa.RecordBatch], stats: ScoreStats, output: OutputSpec
) -> Iterator[pa.RecordBatch]:
    """Pass batches through, accounting for their predictions in ``stats``."""
    for batch in batches:
        stats.add(batch, output)
        yield batch
