"""The function Spark maps over Arrow batches: the platform's scoring kernel, with the model
loaded once per executor process (compiled and verified as in the in-process engine)."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from batch_inference_platform.lib.registry.client import ModelRegistry
from batch_inference_platform.lib.registry.loader import FastScorer, load_fast_scorer
from batch_inference_platform.lib.scoring.kernel import ScoringStamp, feature_matrix, score_batch
from batch_inference_platform.lib.scoring.request import ModelRef

PREDICTION_DDL = (
    "customer_id long, event_date date, score double, model_name string, model_version long, "
    "scored_at timestamp, run_id string"
)
"""``PREDICTION_SCHEMA`` as Spark DDL (the output of ``mapInArrow``)."""


@dataclass(frozen=True)
class PartitionScorer:
    """Scores validated feature batches into prediction batches (``mapInArrow``)."""

    model: ModelRef
    feature_names: tuple[str, ...]
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
            yield score_batch(scorer, batch, stamp)

    def _scorer(self, sample: pa.RecordBatch) -> FastScorer:
        """The version's scorer, cached per process by the loader (one load per executor)."""
        registry = ModelRegistry(self.model.tracking_uri, self.model.registry_uri or None)
        version = registry.version(self.model.name, self.model.version)
        return load_fast_scorer(
            registry,
            version,
            cache_root=Path(self.model_cache_dir),
            sample=lambda: feature_matrix(sample.slice(0, 4096), self.feature_names),
        )
