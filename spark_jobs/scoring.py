"""Score a request's partitions on Spark: read the validated partition (Delta), map the scoring
kernel over Arrow batches, replace the prediction partition in one Delta commit, and measure
the committed scores. A partition that fails is reported and the others go on.

The deployment's partitioning comes with the request: a daily or hourly partition is the rows
whose partition column holds the partition's value (replaced with ``replaceWhere``); an
unpartitioned deployment's one partition, ``all``, is the whole table (overwritten)."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable

import numpy as np
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from batch_inference_platform.lib.deployments.partitioning import Partitioning, PartitionKind
from batch_inference_platform.lib.lake.errors import error_summary
from batch_inference_platform.lib.lake.lineage import latest_commit
from batch_inference_platform.lib.lake.tables import snapshot
from batch_inference_platform.lib.quality.drift import FINE_BINS
from batch_inference_platform.lib.scoring.outputs import (
    LABEL_COLUMN,
    SUM_TOLERANCE,
    OutputKind,
    OutputSpec,
)
from batch_inference_platform.lib.scoring.request import (
    EngineResult,
    PartitionError,
    PartitionReport,
    ScoringRequest,
)
from batch_inference_platform.lib.scoring.stats import SAMPLE_SIZE, ScoreStats
from spark_jobs.partition_scorer import PartitionScorer, identity_arrow_schema, prediction_ddl

Log = Callable[[str], None]
ARROW_BATCH_ROWS = 65_536


def score_on_spark(spark: SparkSession, request: ScoringRequest, log: Log) -> EngineResult:
    """Score every partition of ``request``; failed partitions become ``PartitionError``s."""
    # Prediction timestamps are UTC (``prediction_schema``); so must the session's be.
    spark.conf.set("spark.sql.session.timeZone", "UTC")
    # Bigger Arrow batches amortise the per-batch cost of the Python UDF (default 10,000).
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(ARROW_BATCH_ROWS))
    scored_at = dt.datetime.now(dt.UTC)
    result = EngineResult()
    for key in request.keys:
        try:
            report = _score_partition(spark, request, key, scored_at)
        except Exception as error:  # Spark surfaces read errors as many types; report them all
            files = _unreadable_files(request, key)
            reason = error_summary(error)
            result.errors.append(PartitionError(key, reason, files))
            log(f"{key}: failed ({', '.join(files) or 'no unreadable file found'}): {reason}")
            continue
        result.scored[key] = report
        log(f"{key}: {report.rows} rows scored at {report.rows_per_second:,.0f} rows/s")
    return result


def partition_filter(partitioning: Partitioning, key: str) -> Column | None:
    """The rows of partition ``key``: its partition column equals the partition's value (None:
    the whole table of an unpartitioned deployment)."""
    if partitioning.column is None:
        return None
    spark_type = "timestamp" if partitioning.kind is PartitionKind.HOURLY else "date"
    value = F.lit(partitioning.delta_value(key)).cast(spark_type)
    return F.col(f"`{partitioning.column}`") == value


def replace_where(partitioning: Partitioning, key: str) -> str | None:
    """The ``replaceWhere`` predicate of partition ``key`` (None: overwrite the whole table)."""
    if partitioning.column is None:
        return None
    spark_type = "TIMESTAMP" if partitioning.kind is PartitionKind.HOURLY else "DATE"
    return f"`{partitioning.column}` = CAST('{partitioning.delta_value(key)}' AS {spark_type})"


def _score_partition(
    spark: SparkSession, request: ScoringRequest, key: str, scored_at: dt.datetime
) -> PartitionReport:
    started = time.perf_counter()
    partitioning = request.partition_spec
    on_partition = partition_filter(partitioning, key)
    table = spark.read.format("delta").load(request.validated_uri)
    if on_partition is not None:
        table = table.where(on_partition)
    features = table.select(*(f"`{name}`" for name in request.columns))
    spark_types = {field.name: field.dataType.simpleString() for field in features.schema}
    identity = identity_arrow_schema(spark_types, request.identity)
    scorer = PartitionScorer(
        model=request.model,
        output=request.output_spec,
        identity=identity,
        model_cache_dir=request.model_cache_dir,
        run_id=request.dagster_run_id,
        scored_at=scored_at,
    )
    input_rows = features.count()
    stamp = {"partition": key, **request.commit_metadata.get(key, {})}
    target = request.predictions
    writer = (
        features.mapInArrow(scorer, prediction_ddl(identity, request.output_spec))
        .write.format("delta")
        .mode("overwrite")
        .option("userMetadata", json.dumps(stamp, sort_keys=True))
    )
    if partitioning.columns:
        writer = writer.partitionBy(*partitioning.columns)
    predicate = replace_where(partitioning, key)
    if predicate is not None and target.exists():  # replaceWhere needs a table
        writer = writer.option("replaceWhere", predicate)
    writer.save(request.predictions_uri)
    seconds = time.perf_counter() - started
    written = spark.read.format("delta").load(request.predictions_uri)
    if on_partition is not None:
        written = written.where(on_partition)
    rows, stats = _score_stats(written, request.output_spec)
    commit = latest_commit(target, key)
    if commit is None:
        raise RuntimeError(f"no commit stamped {key} in {request.predictions_uri} after the write")
    return PartitionReport(key, input_rows, rows, commit.version, seconds, stats)


def _score_stats(scored: DataFrame, output: OutputSpec) -> tuple[int, ScoreStats]:
    """Rows and prediction statistics of a committed partition, aggregated by Spark (the same
    figures ``ScoreStats.add`` gives in-process)."""
    scores = [F.col(f"`{name}`") for name in output.score_columns]
    finite = F.lit(True)
    for score in scores:
        finite = finite & score.isNotNull() & ~F.isnan(score) & (F.abs(score) < float("inf"))
    if output.has_label:
        finite = finite & F.col(LABEL_COLUMN).isNotNull()
    primary = (F.greatest(*scores) if len(scores) > 1 else scores[0]) if scores else F.lit(0.0)
    outside = F.lit(False)
    for score in scores:
        outside = outside | (score < 0) | (score > 1)
    total = sum(scores[1:], scores[0]) if scores else F.lit(1.0)
    totals = scored.agg(
        F.count(F.lit(1)).alias("rows"),
        F.sum(F.when(finite, 0).otherwise(1)).alias("non_finite"),
        F.sum(F.when(finite & outside, 1).otherwise(0)).alias("out"),
        F.sum(F.when(finite & (F.abs(total - 1) > SUM_TOLERANCE), 1).otherwise(0)).alias("off"),
        F.min(F.when(finite, primary)).alias("min"),
        F.max(F.when(finite, primary)).alias("max"),
    ).first()
    assert totals is not None
    stats = ScoreStats(
        rows=int(totals["rows"]),
        non_finite=int(totals["non_finite"] or 0),
        out_of_range=int(totals["out"] or 0) if output.is_probability else 0,
        not_summing=int(totals["off"] or 0) if output.kind is OutputKind.CLASS_PROBABILITIES else 0,
    )
    if output.has_label:
        for row in scored.where(finite).groupBy(LABEL_COLUMN).count().collect():
            stats.labels[str(row[LABEL_COLUMN])] = int(row["count"])
    if scores:
        good = scored.where(finite).select(primary.alias("p"))
        bins = F.least(F.greatest(F.floor(F.col("p") * FINE_BINS), F.lit(0)), F.lit(FINE_BINS - 1))
        for row in good.groupBy(bins.alias("bin")).count().collect():
            stats.histogram.counts[int(row["bin"])] += int(row["count"])
        # The lowest random keys of the partition, keys kept: merged with other partitions'
        # samples, each row keeps the same chance of being in the run's sample.
        keyed = good.select("p", F.rand().alias("key")).orderBy("key").limit(SAMPLE_SIZE)
        sample = keyed.collect()
        stats.sample = np.asarray([row["p"] for row in sample], np.float64)
        stats.sample_keys = np.asarray([row["key"] for row in sample], np.float64)
        stats.min_score = float("inf") if totals["min"] is None else float(totals["min"])
        stats.max_score = float("-inf") if totals["max"] is None else float(totals["max"])
    return int(totals["rows"]), stats


def _unreadable_files(request: ScoringRequest, key: str) -> list[str]:
    """The validated files of partition ``key`` whose Parquet footer cannot be read."""
    try:
        source = snapshot(request.validated, request.partition_spec)
        return sorted(source.unreadable_files(key))
    except Exception:  # diagnosis must not hide the original error
        return []
