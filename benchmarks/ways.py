"""One way of scoring the benchmark partition, run in its own process for its own peak RSS.

``python -m benchmarks.ways WAY MODEL WORKDIR`` prints one JSON line: seconds, rows, peak RSS,
start-up seconds reported apart, and the scores of a fixed sample of customers (to check that
every way agrees).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import psutil
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from batch_inference_platform.lib.features.synthetic import CREDIT_FEATURES as MODEL_FEATURES
from batch_inference_platform.lib.features.synthetic import FIRST_CUSTOMER_ID, KEY_COLUMN
from batch_inference_platform.lib.lake.layout import LakeLayout
from batch_inference_platform.lib.lake.tables import DeltaLocation, snapshot
from batch_inference_platform.lib.registry.client import ModelRegistry
from batch_inference_platform.lib.scoring.outputs import OutputKind, OutputSpec
from benchmarks.workspace import ALIAS, DAY, KEY, MODELS, REPO, Workspace

PROBABILITY = OutputSpec(OutputKind.PROBABILITY)
SAMPLE_IDS = 1000
"""Customers whose scores every way reports: ids FIRST_CUSTOMER_ID .. +SAMPLE_IDS."""


def sample_scores(ids: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Highest score per sampled customer id (order-free, so every way is comparable)."""
    keep = ids < FIRST_CUSTOMER_ID + SAMPLE_IDS
    result: dict[str, float] = {}
    for key, score in zip(ids[keep].tolist(), scores[keep].tolist(), strict=True):
        result[str(key)] = max(score, result.get(str(key), -1.0))
    return result


def _features(space: Workspace) -> tuple[np.ndarray, np.ndarray]:
    """The whole partition as an in-memory float32 matrix (raw's input, built untimed)."""
    source = snapshot(space.tables.validated, space.partitioning)
    rows = source.count(KEY)
    matrix = np.empty((rows, len(MODEL_FEATURES)), np.float32)
    ids = np.empty(rows, np.int64)
    at = 0
    for batch in source.batches(KEY, columns=[KEY_COLUMN, *MODEL_FEATURES]):
        n = batch.num_rows
        ids[at : at + n] = batch.column(KEY_COLUMN).to_numpy()
        for j, name in enumerate(MODEL_FEATURES):
            matrix[at : at + n, j] = pc.cast(batch.column(name), pa.float32()).to_numpy(
                zero_copy_only=False
            )
        at += n
    return ids, matrix


def raw(space: Workspace, model: str) -> dict[str, Any]:
    """The model library's own predict on in-memory input (its ceiling), timed on predict only:
    a float32 matrix for models that take one, else a pandas DataFrame of the signature's
    columns (strings as object, numerics as stored in the table)."""
    from batch_inference_platform.lib.registry.loader import load_model

    registry = ModelRegistry(space.tracking_uri)
    loaded = load_model(registry, registry.by_alias(MODELS[model], ALIAS))
    if not loaded.inputs.matrix:
        ids, frame = _frame(space, loaded.inputs.names)
        positive = list(loaded.model.classes_).index(1)
        started = time.perf_counter()
        scores = loaded.model.predict_proba(frame)[:, positive]
        seconds = time.perf_counter() - started
        return {
            "seconds": seconds,
            "rows": len(ids),
            "float32_input": False,
            "sample": sample_scores(ids, scores),
        }
    ids, matrix = _features(space)
    started = time.perf_counter()
    if loaded.flavor == "lightgbm":
        scores = loaded.model.predict(matrix, num_threads=os.cpu_count())
    else:
        scores = loaded.model.predict_proba(matrix)[:, 1]
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "rows": len(ids),
        "float32_input": True,
        "sample": sample_scores(ids, scores),
    }


def _frame(space: Workspace, names: list[str]) -> tuple[np.ndarray, pd.DataFrame]:
    """The whole partition's ``names`` columns as pandas (raw's input for DataFrame models,
    built untimed): strings as object, numerics in the table's stored types."""
    source = snapshot(space.tables.validated, space.partitioning)
    table = pa.Table.from_batches(list(source.batches(KEY, columns=[KEY_COLUMN, *names])))
    ids = table.column(KEY_COLUMN).to_numpy()
    return ids, table.select(names).to_pandas()


def _input_types(model: str, space: Workspace) -> dict[str, str]:
    """The registered version's signature: input column -> MLflow type name, in order."""
    registry = ModelRegistry(space.tracking_uri)
    signature = registry.signature(registry.by_alias(MODELS[model], ALIAS))
    assert signature is not None and signature.inputs is not None
    return {
        spec.name: getattr(spec.type, "name", str(spec.type))
        for spec in signature.inputs.inputs
        if spec.name is not None
    }


def naive(space: Workspace, model: str) -> dict[str, Any]:
    """Whole partition to pandas, ``mlflow.pyfunc`` predict, ``write_deltalake``."""
    import mlflow.pyfunc
    from deltalake import DeltaTable, write_deltalake

    mlflow.set_tracking_uri(space.tracking_uri)
    types = _input_types(model, space)  # the signature's columns (numerics declared double)
    doubles = {name: "float64" for name, kind in types.items() if kind == "double"}
    started = time.perf_counter()
    frame = DeltaTable(space.tables.validated.uri).to_pandas(filters=[("event_date", "=", DAY)])
    pyfunc = mlflow.pyfunc.load_model(f"models:/{MODELS[model]}@{ALIAS}")
    output = np.asarray(pyfunc.predict(frame[list(types)].astype(doubles)))
    scores = output.reshape(len(frame), -1)[:, -1]
    result = frame[[KEY_COLUMN, "event_date"]].assign(score=scores)
    write_deltalake(str(space.output("naive", model)), result, mode="overwrite")
    seconds = time.perf_counter() - started
    ids = frame[KEY_COLUMN].to_numpy()
    return {"seconds": seconds, "rows": len(frame), "sample": sample_scores(ids, scores)}


def spark_udf(space: Workspace, model: str) -> dict[str, Any]:
    """``mlflow.pyfunc.spark_udf`` on local PySpark ``local[2]``, Parquet in and out."""
    import mlflow.pyfunc
    from pyspark.sql import Column, SparkSession
    from pyspark.sql import functions as F

    mlflow.set_tracking_uri(space.tracking_uri)
    os.environ["PYSPARK_PYTHON"] = sys.executable  # workers use this venv, not the system python
    types = _input_types(model, space).items()
    started = time.perf_counter()
    spark = (
        SparkSession.builder.master("local[2]")
        .appName("bench")
        .config("spark.driver.memory", "6g")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .getOrCreate()
    )
    spark.range(1).count()
    session_seconds = time.perf_counter() - started
    started = time.perf_counter()
    result_type = "double" if model == "lgbm" else "array<double>"
    udf = mlflow.pyfunc.spark_udf(
        spark, f"models:/{MODELS[model]}@{ALIAS}", result_type=result_type, env_manager="local"
    )
    frame = spark.read.parquet(str(space.partition_dir))
    # The signature's columns; numerics declared double cast to double, the rest as stored.
    columns = [F.col(c).cast("double").alias(c) if t == "double" else F.col(c) for c, t in types]
    score = cast(Column, udf(F.struct(*columns)))
    if model != "lgbm":
        score = score.getItem(1)
    out = str(space.output("spark_udf", model))
    frame.select(KEY_COLUMN, score.alias("score")).write.mode("overwrite").parquet(out)
    seconds = time.perf_counter() - started
    sample = (
        spark.read.parquet(out).where(F.col(KEY_COLUMN) < FIRST_CUSTOMER_ID + SAMPLE_IDS).toPandas()
    )
    rows = spark.read.parquet(out).count()
    spark.stop()
    return {
        "seconds": seconds,
        "rows": rows,
        "startup_seconds": session_seconds,
        "sample": sample_scores(sample[KEY_COLUMN].to_numpy(), sample["score"].to_numpy()),
    }


def engine(space: Workspace, model: str) -> dict[str, Any]:
    """Our engine: validated Delta in, prediction Delta out, compiled model warm in its cache."""
    from batch_inference_platform.lib.registry.loader import load_scorer
    from batch_inference_platform.lib.scoring.engine import score_partition
    from batch_inference_platform.lib.scoring.kernel import ScoringStamp

    registry = ModelRegistry(space.tracking_uri)
    version = registry.by_alias(MODELS[model], ALIAS)
    source = snapshot(space.tables.validated, space.partitioning)
    warmup = time.perf_counter()
    scorer = load_scorer(
        registry, version, PROBABILITY, lambda: source.batches(KEY), cache_root=space.model_cache
    )
    load_seconds = time.perf_counter() - warmup
    target = DeltaLocation(str(space.output("engine", model)))
    stamp = ScoringStamp(run_id="bench", scored_at=dt.datetime.now(dt.UTC))
    result = score_partition(
        scorer,
        source,
        target,
        space.partitioning,
        KEY,
        stamp,
        identity=space.identity,
        batch_rows=scorer.batch_rows,
    )
    return {
        "seconds": result.seconds,
        "rows": result.rows,
        "startup_seconds": load_seconds,
        "compile_seconds": scorer.compiled.manifest.compile_seconds,
        "scoring_engine": scorer.engine,
        "batch_rows": scorer.batch_rows,
        "sample": _table_sample(space, target),
    }


def spark_job(space: Workspace, model: str) -> dict[str, Any]:
    """Our Spark job (engine ``spark``): Sail over Spark Connect in this process, ``mapInArrow``
    with the compiled kernel (warm in its cache), Delta in, one ``replaceWhere`` commit out.
    The seconds include the executor's model load from the cache, not the session start."""
    from batch_inference_platform.lib.scoring.request import ModelRef, ScoringRequest
    from spark_jobs.scoring import score_on_spark
    from spark_jobs.session import spark_session

    registry = ModelRegistry(space.tracking_uri)
    version = registry.by_alias(MODELS[model], ALIAS)
    target = str(space.output("spark_job", model))
    request = ScoringRequest(
        keys=[KEY],
        identity=space.identity,
        partitioning=space.partitioning.to_json(),
        validated_uri=space.tables.validated.uri,
        predictions_uri=target,
        model=ModelRef(version.name, version.version, space.tracking_uri, ""),
        feature_names=list(_input_types(model, space)),
        output=PROBABILITY.to_json(),
        dagster_run_id="bench",
        model_cache_dir=str(space.model_cache),
    )
    started = time.perf_counter()
    with spark_session() as spark:
        startup = time.perf_counter() - started
        result = score_on_spark(spark, request, lambda line: None)
    if result.errors:
        raise RuntimeError(f"spark_job failed: {result.errors}")
    report = result.scored[KEY]
    return {
        "seconds": report.seconds,
        "rows": report.rows,
        "startup_seconds": startup,
        "sample": _table_sample(space, DeltaLocation(target)),
    }


def compile_only(space: Workspace, model: str) -> dict[str, Any]:
    """Not a way: compile (or find in the cache) the model, so the timed ways start warm."""
    from batch_inference_platform.lib.registry.loader import load_scorer

    registry = ModelRegistry(space.tracking_uri)
    source = snapshot(space.tables.validated, space.partitioning)
    started = time.perf_counter()
    scorer = load_scorer(
        registry,
        registry.by_alias(MODELS[model], ALIAS),
        PROBABILITY,
        lambda: source.batches(KEY),
        cache_root=space.model_cache,
    )
    return {
        "seconds": time.perf_counter() - started,
        "rows": 0,
        "sample": {},
        "scoring_engine": scorer.engine,
    }


def dagster(space: Workspace, model: str) -> dict[str, Any]:
    """One partition materialized through Dagster (the deployment's ``model_versions`` +
    ``predictions``), the benchmark's credit_risk deployment serving ``model``."""
    os.environ.update(
        {
            "BIP__BATCH_INFERENCE__DATA_DIR": str(space.root / "platform"),
            "BIP__BATCH_INFERENCE__LAKE__ROOT": space.layout.root,
            "BIP__BATCH_INFERENCE__MLFLOW__TRACKING_URI": space.tracking_uri,
            "BIP__BATCH_INFERENCE__MLFLOW__ARTIFACT_ROOT": str(space.artifacts),
            "BIP__BATCH_INFERENCE__DEPLOYMENTS_DIR": str(space.write_deployments(model)),
        }
    )
    import dagster as dg

    from batch_inference_platform.config import load_settings
    from batch_inference_platform.definitions import build_definitions
    from batch_inference_platform.defs.scope import DeploymentScope

    settings = load_settings()
    # The compiled model cache is shared with the engine way, as it is on one machine.
    cache = settings.model_cache_dir
    cache.parent.mkdir(parents=True, exist_ok=True)
    if not cache.exists():
        cache.symlink_to(space.model_cache)
    defs = build_definitions(settings)
    deployment = space.deployment(model)
    scope = DeploymentScope(deployment)
    started = time.perf_counter()
    result = dg.materialize(
        cast(list[Any], list(defs.assets or [])),
        selection=[scope.model_versions, scope.predictions],
        instance=dg.DagsterInstance.ephemeral(),
        partition_key=KEY,
        resources=dict(defs.resources or {}),
    )
    seconds = time.perf_counter() - started
    assert result.success
    target = space.layout.deployment(deployment).predictions
    return {
        "seconds": seconds,
        "rows": snapshot(target, deployment.partitioning).count(KEY),
        "sample": _table_sample(space, target),
    }


def launched(space: Workspace, model: str) -> dict[str, Any]:
    """One partition's ``score_partition_job`` (validate, resolve the model, score, catalog,
    archive) launched through GraphQL on a running ``dagster dev`` (``benchmarks/launched.py``)
    and timed from queued to success. Its lake is its own (the bench's validated partition is
    its source), its compiled-model cache the one the other ways share."""
    from batch_inference_platform.config import load_settings
    from benchmarks import launched as instance

    lake = space.root / "launched_lake"
    env = {
        "BIP__BATCH_INFERENCE__DATA_DIR": str(space.root / "launched"),
        "BIP__BATCH_INFERENCE__LAKE__ROOT": str(lake),
        "BIP__BATCH_INFERENCE__MLFLOW__TRACKING_URI": space.tracking_uri,
        "BIP__BATCH_INFERENCE__MLFLOW__ARTIFACT_ROOT": str(space.artifacts),
        "BIP__BATCH_INFERENCE__DEPLOYMENTS_DIR": str(space.write_deployments(model, "launched")),
    }
    os.environ.update(env)
    cache = load_settings().model_cache_dir
    cache.parent.mkdir(parents=True, exist_ok=True)
    if not cache.exists():
        cache.symlink_to(space.model_cache)
    deployment = space.deployment(model)
    job = f"{deployment.name}__score_partition_job"
    log = space.root / f"launched_{model}.log"
    with instance.running_instance(env, REPO, log) as client:
        run_id = instance.launch_partition(client, job, KEY)
        status, phases = instance.wait_for_run(client, run_id)
    if status != "SUCCESS":
        raise RuntimeError(f"launched run {run_id} ended {status}; dagster dev log: {log}")
    target = DeltaLocation(str(space.output("launched", model)))
    quarantine = LakeLayout(str(lake)).deployment(deployment).quarantine
    return {
        "seconds": phases.total,
        "rows": snapshot(target, deployment.partitioning).count(KEY),
        "quarantined": snapshot(quarantine, deployment.partitioning).count(KEY),
        "quarantined_sample": sorted(_table_sample(space, quarantine, score=None)),
        "phases": phases.breakdown(),
        "steps": {s["stepKey"]: round(s["endTime"] - s["startTime"], 2) for s in phases.steps},
        "sample": _table_sample(space, target),
    }


def _table_sample(
    space: Workspace, location: DeltaLocation, score: str | None = "score"
) -> dict[str, float]:
    """The sampled customers' scores, read with a filter (not the whole table); with no
    ``score`` column, the sampled customers the table holds (each 0.0)."""
    partitioning = space.partitioning
    assert partitioning.column is not None  # credit_risk is partitioned by day
    wanted = (ds.field(partitioning.column) == partitioning.scalar(KEY)) & (
        ds.field(KEY_COLUMN) < FIRST_CUSTOMER_ID + SAMPLE_IDS
    )
    ids, scores = [np.empty(0, np.int64)], [np.empty(0)]
    for batch in snapshot(location, partitioning).dataset.to_batches(
        columns=[KEY_COLUMN, *([score] if score else [])], filter=wanted
    ):
        ids.append(batch.column(KEY_COLUMN).to_numpy())
        scores.append(batch.column(score).to_numpy() if score else np.zeros(batch.num_rows))
    return sample_scores(np.concatenate(ids), np.concatenate(scores))


WAYS: dict[str, Callable[[Workspace, str], dict[str, Any]]] = {
    "raw": raw,
    "naive": naive,
    "spark_udf": spark_udf,
    "engine": engine,
    "spark_job": spark_job,
    "dagster": dagster,
    "launched": launched,
    "compile": compile_only,
}


class PeakRss:
    """Peak resident memory of this process and its children (Spark's JVM), in MB.

    ``ru_maxrss`` is inherited from the parent across fork+exec, so it would report the
    launcher's memory; this samples the live process tree instead, plus the kernel's own
    high-water mark of this address space (``VmHWM``).
    """

    def __init__(self, interval: float = 0.05) -> None:
        self._peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, args=(interval,), daemon=True)
        self._thread.start()

    def _sample(self, interval: float) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            try:
                tree = [me, *me.children(recursive=True)]
                self._peak = max(self._peak, sum(p.memory_info().rss for p in tree))
            except psutil.Error:
                pass
            self._stop.wait(interval)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        hwm = next(
            int(line.split()[1]) * 1024
            for line in Path("/proc/self/status").read_text().splitlines()
            if line.startswith("VmHWM:")
        )
        return round(max(self._peak, hwm) / 2**20, 1)


def main() -> None:
    way, model, root = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    memory = PeakRss()
    result = WAYS[way](Workspace(root), model)
    result["peak_rss_mb"] = memory.stop()  # before the agreement sample is read
    if callable(result["sample"]):
        result["sample"] = result["sample"]()
    print("RESULT " + json.dumps(result), flush=True)
    # Skip interpreter teardown: the naive way's to_pandas() leaves delta-rs in a state that
    # aborts at exit (delta-io/delta-rs#2184); the result is already printed.
    os._exit(0)


if __name__ == "__main__":
    main()
