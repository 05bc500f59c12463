"""Score a request's days on Spark: read the validated partition (Delta), map the scoring
kernel over Arrow batches, replace the prediction partition in one Delta commit, and measure
the committed scores. A day that fails is reported and the others go on."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from batch_inference_platform.lib.features.contract import DATE_COLUMN, KEY_COLUMN
from batch_inference_platform.lib.lake.lineage import latest_commit
from batch_inference_platform.lib.lake.tables import snapshot
from batch_inference_platform.lib.quality.drift import FINE_BINS, ScoreHistogram
from batch_inference_platform.lib.scoring.kernel import SCORE_COLUMN
from batch_inference_platform.lib.scoring.request import (
    EngineResult,
    PartitionError,
    PartitionReport,
    ScoreStats,
    ScoringRequest,
)
from spark_jobs.partition_scorer import PREDICTION_DDL, PartitionScorer

Log = Callable[[str], None]
ARROW_BATCH_ROWS = 65_536


def score_on_spark(spark: SparkSession, request: ScoringRequest, log: Log) -> EngineResult:
    """Score every day of ``request``; failed days become ``PartitionError``s."""
    # Prediction timestamps are UTC (``PREDICTION_SCHEMA``); so must the session's be.
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    # Bigger Arrow batches amortise the per-batch cost of the Python UDF (default 10,000).
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(ARROW_BATCH_ROWS))
    scorer = PartitionScorer(
        model=request.model,
        feature_names=tuple(request.feature_names),
        model_cache_dir=request.model_cache_dir,
        run_id=request.dagster_run_id,
        scored_at=dt.datetime.now(dt.UTC),
    )
    result = EngineResult()
    for day in request.dates:
        try:
            report = _score_day(spark, request, scorer, day)
        except Exception as error:  # Spark surfaces read errors as many types; report them all
            files = _unreadable_files(request, day)
            result.errors.append(PartitionError(day, _first_lines(error), files))
            log(f"{day}: failed ({', '.join(files) or 'no unreadable file found'}): {error}")
            continue
        result.scored[day] = report
        log(f"{day}: {report.rows} rows scored at {report.rows_per_second:,.0f} rows/s")
    return result


def _score_day(
    spark: SparkSession, request: ScoringRequest, scorer: PartitionScorer, day: dt.date
) -> PartitionReport:
    started = time.perf_counter()
    on_day = F.col(DATE_COLUMN) == F.lit(day.isoformat()).cast("date")
    features = (
        spark.read.format("delta")
        .load(request.validated_uri)
        .where(on_day)
        .select(KEY_COLUMN, DATE_COLUMN, *request.feature_names)
    )
    input_rows = features.count()
    stamp = {"partition": day.isoformat(), **request.commit_metadata.get(day.isoformat(), {})}
    target = request.predictions
    writer = (
        features.mapInArrow(scorer, PREDICTION_DDL)
        .write.format("delta")
        .mode("overwrite")
        .partitionBy(DATE_COLUMN)
        .option("userMetadata", json.dumps(stamp, sort_keys=True))
    )
    if target.exists():  # replaceWhere needs a table; the first write creates it
        writer = writer.option("replaceWhere", f"{DATE_COLUMN} = '{day.isoformat()}'")
    writer.save(request.predictions_uri)
    seconds = time.perf_counter() - started
    written = spark.read.format("delta").load(request.predictions_uri).where(on_day)
    rows, stats = _score_stats(written)
    commit = latest_commit(target, day)
    if commit is None:
        raise RuntimeError(f"no commit stamped {day} in {request.predictions_uri} after the write")
    return PartitionReport(day, input_rows, rows, commit.version, seconds, stats)


def _score_stats(scored: DataFrame) -> tuple[int, ScoreStats]:
    """Rows and score statistics of a committed partition, aggregated by Spark."""
    score = F.col(SCORE_COLUMN)
    finite = score.isNotNull() & ~F.isnan(score)
    totals = scored.agg(
        F.count(F.lit(1)).alias("rows"),
        F.sum(F.when(finite, 0).otherwise(1)).alias("non_finite"),
        F.sum(F.when(finite & ((score < 0) | (score > 1)), 1).otherwise(0)).alias("out"),
        F.min(F.when(finite, score)).alias("min"),
        F.max(F.when(finite, score)).alias("max"),
    ).first()
    assert totals is not None
    bins = F.least(F.greatest(F.floor(score * FINE_BINS), F.lit(0)), F.lit(FINE_BINS - 1))
    histogram = ScoreHistogram()
    for row in scored.where(finite).groupBy(bins.alias("bin")).count().collect():
        histogram.counts[int(row["bin"])] += int(row["count"])
    stats = ScoreStats(
        histogram=histogram,
        non_finite=int(totals["non_finite"] or 0),
        out_of_range=int(totals["out"] or 0),
        min_score=float("inf") if totals["min"] is None else float(totals["min"]),
        max_score=float("-inf") if totals["max"] is None else float(totals["max"]),
    )
    return int(totals["rows"]), stats


def _unreadable_files(request: ScoringRequest, day: dt.date) -> list[str]:
    """The validated files of ``day`` whose Parquet footer cannot be read."""
    try:
        source = snapshot(request.validated)
        return sorted(source.unreadable_files(day))
    except Exception:  # diagnosis must not hide the original error
        return []


def _first_lines(error: BaseException, lines: int = 3) -> str:
    """The head of an error message (Spark's carry JVM or Rust traces below)."""
    text = f"{type(error).__name__}: {error}"
    return "\n".join(text.strip().splitlines()[:lines])
