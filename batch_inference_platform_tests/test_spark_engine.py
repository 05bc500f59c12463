"""Engine ``spark``: the ``spark_jobs`` job under Dagster Pipes on a local Spark Connect engine
(embedded Sail) scores the same rows into the same scores as the in-process engine, commits
each day as one Delta partition replace, and reports back through Pipes - for credit_risk
(integer customer ids, event_date, one probability) and for churn (string account ids,
snapshot_date, a probability per class and the most likely label)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace

import dagster as dg
import pyarrow as pa
import pytest

from batch_inference_platform.lib.scoring.outputs import LABEL_COLUMN

from .conftest import (
    DAY_A,
    DAY_B,
    Platform,
    PlatformFactory,
    check_evaluations,
    partition_materializations,
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
    days = partition_materializations(engines.result, engines.spark.scope.predictions)
    assert set(days) == {DAY_A.isoformat(), DAY_B.isoformat()}
    for day, scores in engines.local_scores.items():
        meta = days[day.isoformat()]
        assert meta["engine"] == "spark"
        assert meta["scoring_engine"] == "spark (embedded Sail)"
        assert meta["dagster/row_count"] == scores.num_rows  # the day's own rows
    checks = check_evaluations(engines.result)
    assert all(check.passed for check in checks.values()), checks


def test_spark_commits_carry_lineage_for_the_catalog(engines: Engines) -> None:
    catalog = read_all(engines.spark.layout.catalog).to_pylist()
    mine = [
        r for r in catalog if r["dataset"] == "predictions" and r["run_id"] == engines.result.run_id
    ]
    assert sorted(r["partition"] for r in mine) == sorted(
        d.isoformat() for d in engines.local_scores
    )
    assert {r["deployment"] for r in mine} == {"credit_risk"}
    assert {r["model_version"] for r in mine} == {1}
    assert all(r["rows"] > 0 for r in mine)


# --------------------------------------------------------------------------- churn

CHURN_ROWS = 1500


@pytest.fixture(scope="module")
def churn(make_platform: PlatformFactory) -> Engines:
    """The churn deployment scored in process, then again on Spark from the same validated
    partitions and the same registered model."""
    local = replace(make_platform("spark_engine_churn"), deployment_name="churn")
    for day in (DAY_A, DAY_B):
        assert local.generate(day, rows=CHURN_ROWS).success
    assert local.train().success
    assert local.score_range(DAY_A, DAY_B).success
    partitioning = local.deployment.partitioning
    scores = {day: read_day(local.predictions, day, partitioning) for day in (DAY_A, DAY_B)}
    spark = replace(make_platform("unused", share=local, ENGINE="spark"), deployment_name="churn")
    return Engines(local, spark, scores, spark.score_range(DAY_A, DAY_B))


def _by_account(table: pa.Table, columns: list[str]) -> dict[str, tuple]:
    """Each account's prediction columns (churn's key is a string)."""
    keys = [str(key) for key in table.column("account_id").to_pylist()]
    values = zip(*(table.column(name).to_pylist() for name in columns), strict=True)
    return dict(zip(keys, values, strict=True))


def test_churn_scores_on_spark_like_the_in_process_engine(churn: Engines) -> None:
    assert churn.result.success
    deployment = churn.spark.deployment
    assert deployment.key == ("account_id",)
    assert deployment.partitioning.column == "snapshot_date"
    for day, before in churn.local_scores.items():
        after = read_day(churn.spark.predictions, day, deployment.partitioning)
        assert after.num_rows == before.num_rows > 0
        assert after.schema == before.schema
        assert after.schema.field("account_id").type == pa.string()
        assert set(after.column("snapshot_date").to_pylist()) == {day}
        assert "event_date" not in after.schema.names
        classes = [n for n in after.schema.names if n.startswith("score_")]
        assert len(classes) == 3, after.schema.names
        local, spark = _by_account(before, classes), _by_account(after, classes)
        assert local.keys() == spark.keys()
        differences = [abs(a - b) for k in local for a, b in zip(local[k], spark[k], strict=True)]
        assert max(differences) <= 1e-12
        assert _by_account(after, [LABEL_COLUMN]) == _by_account(before, [LABEL_COLUMN])
        assert set(after.column("run_id").to_pylist()) == {churn.result.run_id}
    days = partition_materializations(churn.result, churn.spark.scope.predictions)
    assert set(days) == {DAY_A.isoformat(), DAY_B.isoformat()}
    assert {meta["engine"] for meta in days.values()} == {"spark"}
    checks = check_evaluations(churn.result)
    assert all(check.passed for check in checks.values()), checks
