"""Prediction tables: each validated partition scored by the serving model version."""

import datetime as dt
from collections.abc import Iterable, Iterator

import dagster as dg
import numpy as np
import pyarrow as pa

from batch_inference_platform.defs.models.assets import MODEL_VERSIONS_KEY
from batch_inference_platform.defs.models.serving import ServingModel
from batch_inference_platform.defs.partitions import DAILY_PARTITIONS, Stopwatch, partition_day
from batch_inference_platform.defs.resources import (
    LakeResource,
    ModelRegistryResource,
    QualityPolicyResource,
)
from batch_inference_platform.defs.validation.assets import VALIDATED_KEY
from batch_inference_platform.lib.lake.tables import DeltaLocation, replace_partition, snapshot
from batch_inference_platform.lib.quality.drift import ScoreHistogram, population_stability_index
from batch_inference_platform.lib.registry.loader import load_scorer
from batch_inference_platform.lib.scoring.kernel import (
    PREDICTION_SCHEMA,
    SCORE_COLUMN,
    ScoringStamp,
    score_batches,
)

PREDICTIONS_KEY = dg.AssetKey("predictions")
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
CHECKS = ("row_count_matches_validated", "no_null_scores", "scores_in_unit_range")
DRIFT_CHECK = "score_drift_psi"


@dg.asset(
    key=PREDICTIONS_KEY,
    deps=[VALIDATED_KEY],
    ins={"serving": dg.AssetIn(MODEL_VERSIONS_KEY)},
    partitions_def=DAILY_PARTITIONS,
    group_name="inference",
    kinds={"deltalake"},
    description="Default-risk scores per customer and day, with the model version and run that "
    "produced them; each run replaces exactly its date partition in one Delta commit.",
    check_specs=[
        *(dg.AssetCheckSpec(name, asset=PREDICTIONS_KEY) for name in CHECKS),
        dg.AssetCheckSpec(
            DRIFT_CHECK,
            asset=PREDICTIONS_KEY,
            description="Population stability index of the score distribution "
            "against the earliest scored partition.",
        ),
    ],
)
def predictions(
    context: dg.AssetExecutionContext,
    serving: ServingModel,
    lake: LakeResource,
    registry: ModelRegistryResource,
    policy: QualityPolicyResource,
) -> dg.MaterializeResult:
    day = partition_day(context)
    watch = Stopwatch()
    layout = lake.layout
    validated = snapshot(layout.validated)
    validated_rows = validated.count(day)
    if validated_rows == 0:
        raise dg.Failure(
            f"partition {day} has no validated rows at {layout.validated.uri}: it failed "
            "validation or was never validated (see validated_features checks)"
        )
    scorer = load_scorer(registry.registry, serving.version)
    load_seconds = watch.seconds
    stamp = ScoringStamp(run_id=context.run_id, scored_at=dt.datetime.now(dt.UTC))
    observer = _ScoreObserver()
    target = layout.predictions(serving.version.name)
    commit = replace_partition(
        target,
        day,
        observer.watch(score_batches(scorer, validated.batches(day), stamp)),
        PREDICTION_SCHEMA,
        commit_metadata={
            "dagster_run_id": context.run_id,
            "partition": day.isoformat(),
            "model_uri": serving.version.uri,
        },
    )
    quantiles = observer.histogram.quantiles(QUANTILES)
    psi, reference = _drift(target, day, observer.histogram, policy.drift_bins)
    metadata = {
        **watch.metadata(commit.rows),
        "model_load_seconds": round(load_seconds, 3),
        "delta_version": commit.version,
        "table_uri": dg.MetadataValue.path(target.uri),
        "model_name": serving.version.name,
        "model_version": serving.version.version,
        "model_uri": dg.MetadataValue.url(registry.link(serving.version)),
        "scorer_flavor": scorer.flavor,
        "validated_rows": validated_rows,
        "validated_version": validated.version,
        **{f"score_{name}": value for name, value in quantiles.items()},
    }
    drift_ok = psi is None or psi <= policy.psi_threshold
    return dg.MaterializeResult(
        metadata=metadata,
        check_results=[
            dg.AssetCheckResult(
                check_name="row_count_matches_validated",
                passed=commit.rows == validated_rows,
                metadata={"scored_rows": commit.rows, "validated_rows": validated_rows},
            ),
            dg.AssetCheckResult(
                check_name="no_null_scores",
                passed=observer.null_scores == 0,
                metadata={"null_scores": observer.null_scores},
            ),
            dg.AssetCheckResult(
                check_name="scores_in_unit_range",
                passed=observer.out_of_range == 0,
                metadata={
                    "out_of_range": observer.out_of_range,
                    "min_score": observer.min_score,
                    "max_score": observer.max_score,
                },
            ),
            dg.AssetCheckResult(
                check_name=DRIFT_CHECK,
                passed=drift_ok,
                severity=dg.AssetCheckSeverity.WARN,
                description=(
                    f"PSI {psi:.4f} vs {reference} (threshold {policy.psi_threshold})"
                    if psi is not None
                    else "No earlier partition to compare with yet."
                ),
                metadata={
                    "psi": psi if psi is not None else 0.0,
                    "reference_partition": str(reference or ""),
                },
            ),
        ],
    )


class _ScoreObserver:
    """Watches scores stream past on their way to the table: histogram, nulls, range."""

    def __init__(self) -> None:
        self.histogram = ScoreHistogram()
        self.null_scores = 0
        self.out_of_range = 0
        self.min_score = float("inf")
        self.max_score = float("-inf")

    def watch(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            column = batch.column(SCORE_COLUMN)
            scores = column.to_numpy(zero_copy_only=False)
            finite = scores[np.isfinite(scores)]
            self.null_scores += int((~np.isfinite(scores)).sum())  # nulls arrive as NaN
            self.out_of_range += int(((finite < 0) | (finite > 1)).sum())
            if finite.size:
                self.min_score = min(self.min_score, float(finite.min()))
                self.max_score = max(self.max_score, float(finite.max()))
            self.histogram.add(finite)
            yield batch


def _drift(
    target: DeltaLocation, day: dt.date, current: ScoreHistogram, bins: int
) -> tuple[float | None, dt.date | None]:
    """PSI against the earliest other scored partition (the baseline), if there is one."""
    scored = snapshot(target)
    earlier = [d for d in scored.days() if d != day]
    if not earlier:
        return None, None
    reference_day = earlier[0]
    reference = ScoreHistogram.of(
        b.column(SCORE_COLUMN).to_numpy(zero_copy_only=False)
        for b in scored.batches(reference_day, columns=[SCORE_COLUMN])
    )
    return population_stability_index(reference, current, bins), reference_day
