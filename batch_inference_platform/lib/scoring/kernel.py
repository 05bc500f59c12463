"""The scoring kernel: one validated record batch in, one prediction record batch out.

The same function serves the in-process engine and Spark's ``mapInArrow``, so every engine
produces identical rows and scores.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
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


def feature_matrix(batch: pa.RecordBatch, names: Sequence[str]) -> np.ndarray:
    """The batch's ``names`` columns as a C-contiguous float64 matrix, nulls as NaN.

    Arrow lays the columns out row-major in C++ (``to_tensor``), 1.4x faster than filling a
    numpy matrix column by column from Python.
    """
    columns = [pc.cast(batch.column(name), pa.float64()) for name in names]
    as_float = pa.RecordBatch.from_arrays(columns, names=list(names))
    if as_float.num_rows == 0:
        return np.empty((0, len(names)), dtype=np.float64)
    return np.asarray(as_float.to_tensor(null_to_nan=True, row_major=True).to_numpy())


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


def score_batch(scorer: Scorer, batch: pa.RecordBatch, stamp: ScoringStamp) -> pa.RecordBatch:
    """Score one validated batch; the output has ``PREDICTION_SCHEMA``."""
    return score_features(scorer, batch, feature_matrix(batch, scorer.feature_names), stamp)


def score_features(
    scorer: Scorer, batch: pa.RecordBatch, features: np.ndarray, stamp: ScoringStamp
) -> pa.RecordBatch:
    """Score one batch whose feature matrix is already built (by ``feature_matrix``)."""
    rows = batch.num_rows
    scores = np.asarray(scorer.predict(features), np.float64)
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
