"""The scoring kernel: one validated record batch in, one prediction record batch out.

The same function serves the in-process engine and Spark's ``mapInArrow``, so every engine
produces identical rows and scores.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batch_inference_platform.lib.features.contract import DATE_COLUMN, KEY_COLUMN

SCORE_COLUMN = "score"

PREDICTION_SCHEMA = pa.schema(
    [
        pa.field(KEY_COLUMN, pa.int64(), nullable=False),
        pa.field(DATE_COLUMN, pa.date32(), nullable=False),
        pa.field(SCORE_COLUMN, pa.float64()),
        pa.field("model_name", pa.string()),
        pa.field("model_version", pa.int64()),
        pa.field("scored_at", pa.timestamp("us", tz="UTC")),
        pa.field("run_id", pa.string()),
    ]
)
"""Columns of every prediction table: key, date, score and where the score came from."""


class Scorer(Protocol):
    """A loaded model version that turns a float64 feature matrix into one score per row."""

    @property
    def model_name(self) -> str: ...

    @property
    def model_version(self) -> int: ...

    @property
    def feature_names(self) -> Sequence[str]: ...

    def predict(self, features: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class ScoringStamp:
    """Provenance written on every prediction row of one run."""

    run_id: str
    scored_at: dt.datetime


def feature_matrix(
    batch: pa.RecordBatch, names: Sequence[str], out: np.ndarray | None = None
) -> np.ndarray:
    """The batch's ``names`` columns as a C-contiguous float64 matrix, nulls as NaN.

    With ``out`` (at least as many rows), the matrix is its first rows, so a stream of batches
    reuses one buffer instead of allocating a fresh one per batch.
    """
    rows = batch.num_rows
    if out is None or out.shape[0] < rows or out.shape[1] != len(names):
        out = np.empty((rows, len(names)), dtype=np.float64)
    matrix = out[:rows]
    for j, name in enumerate(names):
        column = pc.cast(batch.column(name), pa.float64())
        matrix[:, j] = column.to_numpy(zero_copy_only=False)
    return matrix


def sample_features(
    batches: Iterable[pa.RecordBatch], names: Sequence[str], rows: int = 4096
) -> np.ndarray:
    """The first ``rows`` rows of a stream as a feature matrix (to verify a compiled model)."""
    taken: list[np.ndarray] = []
    remaining = rows
    for batch in batches:
        if remaining <= 0:
            break
        part = batch.slice(0, remaining)
        taken.append(feature_matrix(part, names))
        remaining -= part.num_rows
    if not taken:
        return np.empty((0, len(names)), np.float64)
    return np.concatenate(taken)


def score_batch(
    scorer: Scorer,
    batch: pa.RecordBatch,
    stamp: ScoringStamp,
    buffer: np.ndarray | None = None,
) -> pa.RecordBatch:
    """Score one validated batch; the output has ``PREDICTION_SCHEMA``.

    ``buffer`` is scratch space for the feature matrix (see ``feature_matrix``)."""
    rows = batch.num_rows
    features = feature_matrix(batch, scorer.feature_names, out=buffer)
    scores = np.array(scorer.predict(features), np.float64)  # a copy: never a view of buffer
    if scores.shape != (rows,):
        raise ValueError(
            f"model {scorer.model_name} v{scorer.model_version} returned shape {scores.shape} "
            f"for {rows} rows; expected one score per row"
        )
    return pa.RecordBatch.from_arrays(
        [
            pc.cast(batch.column(KEY_COLUMN), pa.int64()),
            pc.cast(batch.column(DATE_COLUMN), pa.date32()),
            pa.array(scores, pa.float64()),
            pa.repeat(pa.scalar(scorer.model_name, pa.string()), rows),
            pa.repeat(pa.scalar(scorer.model_version, pa.int64()), rows),
            pa.repeat(pa.scalar(stamp.scored_at, pa.timestamp("us", tz="UTC")), rows),
            pa.repeat(pa.scalar(stamp.run_id, pa.string()), rows),
        ],
        schema=PREDICTION_SCHEMA,
    )


def score_batches(
    scorer: Scorer, batches: Iterable[pa.RecordBatch], stamp: ScoringStamp
) -> Iterator[pa.RecordBatch]:
    """Score a stream of batches lazily, one batch in memory at a time, in one scratch buffer."""
    buffer: np.ndarray | None = None
    for batch in batches:
        if not batch.num_rows:
            continue
        if buffer is None or buffer.shape[0] < batch.num_rows:
            buffer = np.empty((batch.num_rows, len(scorer.feature_names)), dtype=np.float64)
        yield score_batch(scorer, batch, stamp, buffer)
