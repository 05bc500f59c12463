"""``engine`` and ``engine_<name>``: where partitions are scored, chosen by
``batch-inference.engine``; the asset code is the same.

- ``local``: in-process, streaming (``lib.scoring.engine``).
- ``spark``: the ``spark_jobs`` job under ``PipesSubprocessClient`` against a Spark Connect
  engine (an embedded Sail server unless ``connect-url`` names one).
- ``databricks``: the same job as a one-time run on a new job cluster (``databricks.py``).
"""

import datetime as dt
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import dagster as dg

from batch_inference_platform.defs.resources.lake import LakeResource
from batch_inference_platform.defs.resources.registry import ModelRegistryResource
from batch_inference_platform.lib.lake.tables import snapshot
from batch_inference_platform.lib.scoring.engine import score_request
from batch_inference_platform.lib.scoring.kernel import ScoringStamp
from batch_inference_platform.lib.scoring.request import (
    REQUEST_EXTRA,
    EngineResult,
    ScoringRequest,
)

SPARK_JOB_MODULE = "spark_jobs.score_partitions"


class ScoringEngineResource(dg.ConfigurableResource, ABC):
    """Scores the partitions of a ``ScoringRequest``; reports what it committed and what failed."""

    @abstractmethod
    def score(
        self,
        context: dg.AssetExecutionContext | dg.OpExecutionContext,
        request: ScoringRequest,
        *,
        lake: LakeResource,
        registry: ModelRegistryResource,
    ) -> EngineResult: ...

    @property
    def name(self) -> str:
        return type(self).__name__.removesuffix("EngineResource").lower()


class LocalEngineResource(ScoringEngineResource):
    """In-process scoring: the model loads once, each partition streams into one Delta commit."""

    def score(
        self,
        context: dg.AssetExecutionContext | dg.OpExecutionContext,
        request: ScoringRequest,
        *,
        lake: LakeResource,
        registry: ModelRegistryResource,
    ) -> EngineResult:
        validated = snapshot(request.validated, request.partition_spec)
        version = registry.registry.version(request.model.name, request.model.version)
        started = time.perf_counter()
        scorer = registry.scorer(
            version, lambda: validated.batches(request.keys[0]), request.output_spec
        )
        if scorer.output != request.output_spec:
            raise dg.Failure(
                f"{version.uri} is bound to {scorer.output.to_json()} here, but the request "
                f"expects {request.output_spec.to_json()}"
            )
        load_seconds = time.perf_counter() - started
        stamp = ScoringStamp(run_id=request.dagster_run_id, scored_at=dt.datetime.now(dt.UTC))
        result = score_request(
            scorer,
            validated,
            request.predictions,
            request,
            stamp,
            batch_rows=scorer.batch_rows,
            on_scored=lambda r: context.log.info(
                f"{r.key}: {r.rows} rows scored at {r.rows_per_second:,.0f} rows/s "
                f"(Delta v{r.delta_version})"
            ),
        )
        result.metadata.update(
            scoring_engine=scorer.engine, model_load_seconds=round(load_seconds, 3)
        )
        return result


class SparkEngineResource(ScoringEngineResource):
    """The Spark job in a subprocess through Dagster Pipes, on a Spark Connect engine."""

    connect_url: str = ""
    """Spark Connect URL (``sc://host:port``); empty: the job starts an embedded Sail server."""

    def score(
        self,
        context: dg.AssetExecutionContext | dg.OpExecutionContext,
        request: ScoringRequest,
        *,
        lake: LakeResource,
        registry: ModelRegistryResource,
    ) -> EngineResult:
        env = {"SPARK_REMOTE": self.connect_url} if self.connect_url else {}
        invocation = dg.PipesSubprocessClient(env=env).run(
            context=context,
            command=[sys.executable, "-m", SPARK_JOB_MODULE, "--pipes", "subprocess"],
            extras={REQUEST_EXTRA: request.to_json()},
        )
        result = engine_result(invocation.get_custom_messages())
        result.metadata["scoring_engine"] = f"spark ({self.connect_url or 'embedded Sail'})"
        return result


def engine_result(messages: Sequence[Any]) -> EngineResult:
    """The job's report: its last custom message (it sends exactly one)."""
    if not messages:
        raise dg.Failure("the scoring job ended without reporting its results through Pipes")
    return EngineResult.from_json(messages[-1])
