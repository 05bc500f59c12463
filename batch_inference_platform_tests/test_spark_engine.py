"""Engine ``spark``: the ``spark_jobs`` job under Dagster Pipes on a local Spark Connect engine
(embedded Sail) scores the same rows into the same scores as the in-process engine, commits
each day as one Delta partition replace, and reports back through Pipes."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import dagster as dg
import pyarrow as pa
import pytest

from .conftest import (
    DAY_A,
    DAY_B,
    Platform,
    PlatformFactory,
    check_evaluations,
    materializations,
    read_all,
    read_day,
    scores_by_key,
)


@dataclass
class Engines:
    local: Platform
    spark: Platform
    local_scores: dict[dt.date, pa.Table]
    result: dg.ExecuteInProcessResult


@pytest.fixture(scope="module")
def engines(make_platform: PlatformFactory) -> Engines:
    local = make_platform("spark_engine")
    for day in (DAY_A, DAY_B):
        assert local.generate(day).success
    assert local.train().success
    assert local.score_range(DAY_A, DAY_B).success
    scores = {day: read_day(local.predictions, day) for day in (DAY_A, DAY_B)}
    spark = make_platform("unused", share=local, ENGINE="spark")
    return Engines(local, spark, scores, spark.score_range(DAY_A, DAY_B))


def test_the_spark_job_scores_like_the_in_process_engine(engines: Engines) -> None:
    assert engines.result.success
    for day, before in engines.local_scores.items():
        after = read_day(engines.spark.predictions, day)
        assert after.num_rows == before.num_rows > 0
        local, spark = scores_by_key(before), scores_by_key(after)
        assert local.keys() == spark.keys()
        assert max(abs(local[k] - spark[k]) for k in local) <= 1e-12
        assert set(after.column("model_version").to_pylist()) == {1}
        assert set(after.column("run_id").to_pylist()) == {engines.result.run_id}


def test_pipes_reports_reach_the_materialization(engines: Engines) -> None:
    meta = materializations(engines.result)["predictions"]
    assert meta["engine"] == "spark"
    assert meta["scoring_engine"] == "spark (embedded Sail)"
    rows = sum(t.num_rows for t in engines.local_scores.values())
    assert meta["dagster/row_count"] == rows
    assert set(meta["partitions"]) == {DAY_A.isoformat(), DAY_B.isoformat()}
    checks = check_evaluations(engines.result)
    assert all(check.passed for check in checks.values()), checks


def test_spark_commits_carry_lineage_for_the_catalog(engines: Engines) -> None:
    catalog = read_all(engines.spark.layout.catalog).to_pylist()
    mine = [
        r for r in catalog if r["dataset"] == "predictions" and r["run_id"] == engines.result.run_id
    ]
    assert sorted(r["partition"] for r in mine) == sorted(engines.local_scores)
    assert {r["model_version"] for r in mine} == {1}
    assert all(r["rows"] > 0 for r in mine)
