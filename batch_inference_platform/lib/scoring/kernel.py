"""The scoring kernel: one validated record batch in, one prediction record batch out.

The model receives what its signature declares (``InputPlan``) and its output is written as
the columns of its declared kind (``OutputSpec``).

The same function serves the in-process engine and Spark's ``mapInArrow``, so every engine
produces identical rows and scores.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from batch_inference_platform.lib.scoring.inputs import InputPlan, ModelInput
from batch_inference_platform.lib.scoring.outputs import OutputShapeError, OutputSpec

PROVENANCE_FIELDS: tuple[pa.Field, ...] = (
    pa.field("model_name", pa.string()),
    pa.field("model_version", pa.int64()),
    pa.field("scored_at", pa.timestamp("us", tz="UTC")),
    pa.field("run_id", pa.string()),
)
"""The columns that say which model version scored a row, when and in which run."""


def identity_schema(validated: pa.Schema, identity: list[str]) -> pa.Schema:
    """The ``identity`` columns (keys, then the partition column) as the validated table
    stores them: what ``prediction_schema`` starts with."""
    return pa.schema([validated.field(name) for name in identity])


def prediction_schema(identity: pa.Schema, output: OutputSpec) -> pa.Schema:
    """Columns of a prediction table: the deployment's identity columns (keys with their
    validated types, then the partition column), the output's columns and their provenance."""
    return pa.schema(
        [
            *(field.with_nullable(False) for field in identity),
            *output.fields,
            *PROVENANCE_FIELDS,
        ]
    )


class Scorer(Protocol):
    """A model version bound to an output kind: prepared inputs in, the bound output out."""

    @property
    def model_name(self) -> str: ...

    @property
    def model_version(self) -> int: ...

    @property
    def inputs(self) -> InputPlan: ...

    @property
    def output(self) -> OutputSpec: ...

    def predict(self, model_input: ModelInput) -> Any: ...


@dataclass(frozen=True)
class ScoringStamp:
    """Provenance written on every prediction row of one run."""

    run_id: str
    scored_at: dt.datetime


def score_batch(
    scorer: Scorer, batch: pa.RecordBatch, stamp: ScoringStamp, identity: pa.Schema
) -> pa.RecordBatch:
    """Score one validated batch; the output has ``prediction_schema(identity,
    scorer.output)``, its ``identity`` columns copied from ``batch``."""
    return score_prepared(scorer, batch, scorer.inputs.prepare(batch), stamp, identity)


def score_prepared(
    scorer: Scorer,
    batch: pa.RecordBatch,
    model_input: ModelInput,
    stamp: ScoringStamp,
    identity: pa.Schema,
) -> pa.RecordBatch:
    """Score one batch whose model input is already built (by ``InputPlan.prepare``)."""
    rows = batch.num_rows
    try:
        outputs = scorer.output.arrays(scorer.predict(model_input), rows)
    except OutputShapeError as error:
        raise OutputShapeError(
            f"model {scorer.model_name} v{scorer.model_version}: {error} for {rows} rows "
            f"({scorer.output.describe()})"
        ) from error
    return pa.RecordBatch.from_arrays(
        [
            *(pc.cast(batch.column(field.name), field.type) for field in identity),
            *outputs,
            pa.repeat(pa.scalar(scorer.model_name, pa.string()), rows),
            pa.repeat(pa.scalar(scorer.model_version, pa.int64()), rows),
            pa.repeat(pa.scalar(stamp.scored_at, pa.timestamp("us", tz="UTC")), rows),
            pa.repeat(pa.scalar(stamp.run_id, pa.string()), rows),
        ],
        schema=prediction_schema(identity, scorer.output),
    )
