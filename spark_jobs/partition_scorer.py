"""The function Spark maps over Arrow batches: the platform's scoring kernel, with the model
loaded once per executor process (bound to the request's output and compiled and verified as
in the in-process engine)."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from batch_inference_platform.lib.registry.client import ModelRegistry
from batch_inference_platform.lib.registry.loader import ServingScorer, load_scorer
from batch_inference_platform.lib.scoring.kernel import (
    ScoringStamp,
    prediction_schema,
    score_batch,
)
from batch_inference_platform.lib.scoring.outputs import OutputSpec
from batch_inference_platform.lib.scoring.request import ModelRef

_SPARK_TYPES = {
    pa.int8(): "byte",
    pa.int16(): "short",
    pa.int32(): "int",
    pa.int64(): "long",
    pa.date32(): "date",
    pa.float32(): "float",
    pa.float64(): "double",
    pa.string(): "string",
    pa.timestamp("us", tz="UTC"): "timestamp",
}
_ARROW_TYPES = {spark: arrow for arrow, spark in _SPARK_TYPES.items()}


def prediction_ddl(identity: pa.Schema, output: OutputSpec) -> str:
    """``prediction_schema(identity, output)`` as Spark DDL (the output of ``mapInArrow``)."""
    fields = prediction_schema(identity, output)
    return ", ".join(f"`{field.name}` {_SPARK_TYPES[field.type]}" for field in fields)


def identity_arrow_schema(spark_types: dict[str, str], identity: list[str]) -> pa.Schema:
    """The Arrow types of the identity columns as Spark hands them to ``mapInArrow``, from
    their Spark ``simpleString`` types (``long``, ``string``, ``date``, ``timestamp``...)."""
    fields = []
    for name in identity:
        spark_type = {"bigint": "long", "tinyint": "byte", "smallint": "short"}.get(
            spark_types[name], spark_types[name]
        )
        if spark_type not in _ARROW_TYPES:
            raise ValueError(f"identity column {name!r} has Spark type {spark_type}, unsupported")
        fields.append(pa.field(name, _ARROW_TYPES[spark_type], nullable=False))
    return pa.schema(fields)


@dataclass(frozen=True)
class PartitionScorer:
    """Scores validated feature batches into prediction batches (``mapInArrow``)."""

    model: ModelRef
    output: OutputSpec
    identity: pa.Schema
    """The key and partition columns copied onto each prediction, in their Spark types."""
    model_cache_dir: str
    run_id: str
    scored_at: dt.datetime

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        batches = (batch for batch in batches if batch.num_rows)
        first = next(batches, None)
        if first is None:
            return
        scorer = self._scorer(first)
        stamp = ScoringStamp(run_id=self.run_id, scored_at=self.scored_at)
        for batch in itertools.chain([first], batches):
            yield score_batch(scorer, batch, stamp, self.identity)

    def _scorer(self, sample: pa.RecordBatch) -> ServingScorer:
        """The version's scorer, cached per process by the loader (one load per executor)."""
        registry = ModelRegistry(self.model.tracking_uri, self.model.registry_uri or None)
        version = registry.version(self.model.name, self.model.version)
        scorer = load_scorer(
            registry,
            version,
            self.output,
            lambda: [sample.slice(0, 4096)],
            cache_root=Path(self.model_cache_dir),
        )
        if scorer.output != self.output:
            raise ValueError(
                f"{version.uri} binds to {scorer.output.to_json()} on this executor; the request "
                f"expects {self.output.to_json()}"
            )
        return scorer
