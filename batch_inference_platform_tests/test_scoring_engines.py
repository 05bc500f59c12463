"""The in-process engine and the Spark job (embedded Sail) score a deployment whatever its
keys and partitioning: an hourly table keyed by two string columns, an unpartitioned table.
Each prediction row carries its source row's identity; each partition is one Delta replace
(the whole table when unpartitioned), and both engines write the same rows and scores."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from batch_inference_platform.lib.deployments.partitioning import Partitioning
from batch_inference_platform.lib.features.contract import Column, Contract, Kind
from batch_inference_platform.lib.lake.tables import (
    DeltaLocation,
    read_partition,
    replace_partition,
    snapshot,
)
from batch_inference_platform.lib.quality.rules import to_canonical
from batch_inference_platform.lib.registry.adapters import model_shape
from batch_inference_platform.lib.registry.loader import LoadedModel, ServingScorer, bind
from batch_inference_platform.lib.scoring.engine import score_request
from batch_inference_platform.lib.scoring.inputs import InputColumn, InputPlan
from batch_inference_platform.lib.scoring.kernel import ScoringStamp
from batch_inference_platform.lib.scoring.outputs import SCORE_COLUMN, OutputKind, OutputSpec
from batch_inference_platform.lib.scoring.request import ModelRef, ScoringRequest

from .contracts import CREDIT_MODEL_FEATURES, HOURLY, UNPARTITIONED, credit_batch, credit_contract

HOURS = ["2026-11-01-06:00", "2026-11-01-07:00"]
STAMP = ScoringStamp(run_id="run-7", scored_at=dt.datetime(2026, 11, 2, tzinfo=dt.UTC))
OUTPUT = OutputSpec(OutputKind.VALUE)
TWO_STRING_KEYS = (
    Column("region_code", Kind.STRING, required=True),
    Column("account_id", Kind.STRING, required=True),
)


class _Linear:
    """A regressor: a fixed linear function of the model's inputs (NaN as 0)."""

    def get_params(self) -> dict:
        return {}

    def fit(self) -> None: ...

    def predict(self, features: np.ndarray) -> np.ndarray:
        weights = np.linspace(0.1, 1.0, features.shape[1])
        return np.nan_to_num(features) @ weights


def _scorer() -> ServingScorer:
    inputs = InputPlan(
        tuple(InputColumn(name, "double") for name in CREDIT_MODEL_FEATURES), matrix=True
    )
    model = _Linear()
    loaded = LoadedModel("linear", 1, "sklearn", model, inputs, model_shape("sklearn", model), "t")
    return bind(loaded, OUTPUT, lambda: [])


def _validated_rows(contract: Contract, key: str, rows: int, seed: int) -> pa.RecordBatch:
    partitioning = contract.partitioning
    keys = {
        "region_code": pa.array(np.where(np.arange(rows) % 2 == 0, "eu", "us")),
        "account_id": pa.array([f"acct-{seed}-{i // 2}" for i in range(rows)]),
    }
    if partitioning.partitioned:
        batch = credit_batch(
            rows,
            keys=keys,
            day=partitioning.value(key),
            partition_column=partitioning.column,
            partition_type=partitioning.arrow_type,
            seed=seed,
        )
    else:
        batch = credit_batch(rows, keys=keys, partition_column=None, seed=seed)
    return to_canonical(batch, contract)


def _write_validated(root: Path, contract: Contract, keys: list[str]) -> DeltaLocation:
    location = DeltaLocation(str(root / "validated"))
    for seed, key in enumerate(keys):
        batch = _validated_rows(contract, key, 200 + 50 * seed, seed)
        replace_partition(
            location, contract.partitioning, key, [batch], contract.validated_schema()
        )
    return location


def _request(
    contract: Contract, validated: DeltaLocation, predictions: DeltaLocation, keys: list[str]
) -> ScoringRequest:
    return ScoringRequest(
        keys=keys,
        identity=contract.identity,
        partitioning=contract.partitioning.to_json(),
        validated_uri=validated.uri,
        predictions_uri=predictions.uri,
        model=ModelRef("linear", 1, "", ""),
        feature_names=list(CREDIT_MODEL_FEATURES),
        output=OUTPUT.to_json(),
        dagster_run_id=STAMP.run_id,
        model_cache_dir="",
        commit_metadata={key: {"partition": key, "dagster_run_id": STAMP.run_id} for key in keys},
    )


def _table(location: DeltaLocation, partitioning: Partitioning, key: str) -> pa.Table:
    return pa.Table.from_batches(list(read_partition(location, partitioning, key)))


def _scores(table: pa.Table, identity: list[str]) -> dict[tuple, float | None]:
    columns = [table.column(name).to_pylist() for name in identity]
    return dict(
        zip(zip(*columns, strict=True), table.column(SCORE_COLUMN).to_pylist(), strict=True)
    )


@pytest.fixture
def hourly(tmp_path: Path) -> tuple[Contract, DeltaLocation]:
    contract = credit_contract(HOURLY, key=TWO_STRING_KEYS)
    return contract, _write_validated(tmp_path, contract, HOURS)


def test_in_process_engine_scores_hourly_partitions_with_string_keys(
    hourly: tuple[Contract, DeltaLocation], tmp_path: Path
) -> None:
    contract, validated = hourly
    predictions = DeltaLocation(str(tmp_path / "predictions"))
    request = _request(contract, validated, predictions, HOURS)
    source = snapshot(validated, HOURLY)
    result = score_request(_scorer(), source, predictions, request, STAMP, batch_rows=64)
    assert result.errors == []
    assert list(result.scored) == HOURS
    for index, key in enumerate(HOURS):
        report = result.scored[key]
        assert report.key == key
        assert report.rows == report.input_rows == 200 + 50 * index
        table = _table(predictions, HOURLY, key)
        assert table.schema.names[:3] == ["region_code", "account_id", "event_hour"]
        assert table.schema.field("account_id").type == pa.string()
        assert set(table.column("event_hour").to_pylist()) == {HOURLY.value(key)}
        source_rows = _table(validated, HOURLY, key)
        expected = _Linear().predict(
            np.column_stack(
                [
                    source_rows.column(n).to_numpy(zero_copy_only=False)
                    for n in CREDIT_MODEL_FEATURES
                ]
            )
        )
        identity = contract.identity
        assert _scores(table, identity) == pytest.approx(
            dict(
                zip(
                    zip(*(source_rows.column(n).to_pylist() for n in identity), strict=True),
                    expected.tolist(),
                    strict=True,
                )
            )
        )


def test_in_process_engine_replaces_the_whole_unpartitioned_table(tmp_path: Path) -> None:
    contract = credit_contract(UNPARTITIONED, key=TWO_STRING_KEYS)
    validated = _write_validated(tmp_path, contract, ["all"])
    predictions = DeltaLocation(str(tmp_path / "predictions"))
    request = _request(contract, validated, predictions, ["all"])
    for _ in range(2):  # the second run replaces the first's rows
        result = score_request(
            _scorer(), snapshot(validated, UNPARTITIONED), predictions, request, STAMP
        )
        assert result.errors == [] and result.scored["all"].rows == 200
    table = _table(predictions, UNPARTITIONED, "all")
    assert table.num_rows == 200
    assert table.schema.names[:3] == ["region_code", "account_id", SCORE_COLUMN]


# --------------------------------------------------------------------------- Spark


@pytest.fixture(scope="module")
def spark() -> Iterator[object]:
    pytest.importorskip("pysail")
    from spark_jobs.session import spark_session

    with spark_session() as session:
        yield session


@pytest.fixture
def fixed_scorer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Spark job's scorer without a registry: ``_Linear`` bound to ``OUTPUT`` (Sail runs
    the Arrow UDF in this process, so the patched class is the one it unpickles)."""
    from spark_jobs.partition_scorer import PartitionScorer

    monkeypatch.setattr(PartitionScorer, "_scorer", lambda self, sample: _scorer())


@pytest.mark.usefixtures("fixed_scorer")
def test_spark_job_scores_like_the_in_process_engine(
    spark: object, hourly: tuple[Contract, DeltaLocation], tmp_path: Path
) -> None:
    from spark_jobs.scoring import score_on_spark

    contract, validated = hourly
    local = DeltaLocation(str(tmp_path / "local"))
    on_spark = DeltaLocation(str(tmp_path / "spark"))
    source = snapshot(validated, HOURLY)
    score_request(_scorer(), source, local, _request(contract, validated, local, HOURS), STAMP)
    messages: list[str] = []
    result = score_on_spark(
        spark,  # pyright: ignore[reportArgumentType]
        _request(contract, validated, on_spark, HOURS),
        messages.append,
    )
    assert result.errors == [], result.errors
    assert list(result.scored) == HOURS
    for key in HOURS:
        assert result.scored[key].rows == result.scored[key].input_rows > 0
        expected, actual = _table(local, HOURLY, key), _table(on_spark, HOURLY, key)
        assert actual.schema.field("account_id").type == pa.string()
        assert set(actual.column("event_hour").to_pylist()) == {HOURLY.value(key)}
        assert _scores(actual, contract.identity) == pytest.approx(
            _scores(expected, contract.identity)
        )
    # Scoring one hour again replaces that hour only.
    again = score_on_spark(
        spark,  # pyright: ignore[reportArgumentType]
        _request(contract, validated, on_spark, HOURS[:1]),
        messages.append,
    )
    assert again.errors == []
    assert snapshot(on_spark, HOURLY).count(HOURS[1]) == result.scored[HOURS[1]].rows
    assert snapshot(on_spark, HOURLY).count(HOURS[0]) == result.scored[HOURS[0]].rows


@pytest.mark.usefixtures("fixed_scorer")
def test_spark_job_overwrites_an_unpartitioned_table(spark: object, tmp_path: Path) -> None:
    from spark_jobs.scoring import score_on_spark

    contract = credit_contract(UNPARTITIONED, key=TWO_STRING_KEYS)
    validated = _write_validated(tmp_path, contract, ["all"])
    predictions = DeltaLocation(str(tmp_path / "predictions"))
    request = _request(contract, validated, predictions, ["all"])
    for _ in range(2):
        result = score_on_spark(spark, request, lambda message: None)  # pyright: ignore[reportArgumentType]
        assert result.errors == [], result.errors
        assert result.scored["all"].rows == 200
    assert _table(predictions, UNPARTITIONED, "all").num_rows == 200


# --------------------------------------------------------------------------- realtime insights


def test_realtime_risk_is_read_by_the_deployments_key_column(tmp_path: Path) -> None:
    from batch_inference_platform.lib.realtime.insights import risk_scores

    from .contracts import DAILY

    contract = credit_contract(DAILY, key=(Column("client_no", Kind.INTEGER, required=True),))
    location = DeltaLocation(str(tmp_path / "validated"))
    for day, seed in (("2026-11-01", 1), ("2026-11-02", 2)):
        keys: dict[str, pa.Array] = {"client_no": pa.array(list(range(10, 20)), pa.int64())}
        batch = credit_batch(10, keys=keys, day=DAILY.value(day), seed=seed)
        replace_partition(
            location, DAILY, day, [to_canonical(batch, contract)], contract.validated_schema()
        )
    risks = risk_scores(_scorer(), location, DAILY, [11, 13, 99], key="client_no")
    assert set(risks) == {11, 13}
    latest = _table(location, DAILY, "2026-11-02")
    row = latest.filter(pc.equal(latest.column("client_no"), pa.scalar(13, pa.int64()))).slice(0, 1)
    features = np.column_stack(
        [row.column(n).to_numpy(zero_copy_only=False) for n in CREDIT_MODEL_FEATURES]
    )
    assert risks[13] == pytest.approx(float(_Linear().predict(features)[0]))
