"""Validation against a deployment's contract: any key columns (strings, two columns), daily,
hourly and unpartitioned partitions, duplicates kept once, reasons naming the columns."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from batch_inference_platform.lib.features.contract import Column, Kind
from batch_inference_platform.lib.quality.rules import (
    REASON_COLUMN,
    canonical_schema,
    schema_problems,
    to_canonical,
)
from batch_inference_platform.lib.quality.validation import (
    ValidationPolicy,
    duplicated_keys,
    judge,
    profile_partition,
    quarantined_rows,
    valid_rows,
)

from .contracts import HOURLY, UNPARTITIONED, credit_batch, credit_contract, source_of

DAY = "2026-11-02"
POLICY = ValidationPolicy(
    min_rows=1, max_null_rate=0.5, max_quarantine_rate=0.5, max_duplicate_rate=0.5
)


def _validate(contract, key, *batches):
    source = source_of(*batches)
    profile = profile_partition(source, batches[0].schema, contract, key)
    valid = pa.Table.from_batches(
        list(valid_rows(source, contract, key, profile)), canonical_schema(contract)
    )
    quarantine = pa.Table.from_batches(
        list(quarantined_rows(source, contract, key, profile)),
        canonical_schema(contract, with_reason=True),
    )
    return profile, valid, quarantine


def _reasons(quarantine: pa.Table, key: str) -> dict:
    return dict(
        zip(
            quarantine.column(key).to_pylist(),
            quarantine.column(REASON_COLUMN).to_pylist(),
            strict=True,
        )
    )


def test_clean_partition_validates_in_canonical_types() -> None:
    contract = credit_contract()
    batch = credit_batch(300)
    profile, valid, quarantine = _validate(contract, DAY, batch)
    assert profile.schema_problems == []
    assert (profile.rows, profile.quarantined_rows, profile.duplicate_rows) == (300, 0, 0)
    assert quarantine.num_rows == 0
    assert valid.schema == contract.validated_schema()
    assert valid.schema.names[:2] == ["customer_id", "event_date"]
    assert valid.schema.field("customer_id").type == pa.int64()  # int32 in the source
    assert "defaulted" not in valid.schema.names
    assert all(outcome.passed for outcome in judge(profile, POLICY, contract))


def test_integer_key_duplicates_keep_the_first_and_null_keys_are_required() -> None:
    contract = credit_contract()
    first = credit_batch(4, keys={"customer_id": pa.array([1, 2, 3, 4], pa.int64())})
    second = credit_batch(4, keys={"customer_id": pa.array([2, 5, None, 2], pa.int64())}, seed=8)
    profile, valid, quarantine = _validate(contract, DAY, first, second)
    assert valid.column("customer_id").to_pylist() == [1, 2, 3, 4, 5]
    assert quarantine.column(REASON_COLUMN).to_pylist() == [
        "duplicate customer_id",
        "customer_id is null",
        "duplicate customer_id",
    ]
    assert profile.duplicate_rows == 2
    outcome = {o.name: o for o in judge(profile, POLICY, contract)}["duplicate_keys_within_limit"]
    assert outcome.description.startswith("2 repeated customer_id rows")


def test_string_keys_with_duplicates_are_quarantined_with_the_reason() -> None:
    key = (Column("account_id", Kind.STRING, required=True),)
    contract = credit_contract(key=key)
    first = credit_batch(3, keys={"account_id": pa.array(["a-1", "a-2", "a-3"])})
    # A large_string batch: the family counts, not the width.
    second = credit_batch(
        3, keys={"account_id": pa.array(["a-2", "a-4", "a-2"], pa.large_string())}, seed=9
    )
    profile, valid, quarantine = _validate(contract, DAY, first, second.cast(_large(second)))
    assert valid.column("account_id").to_pylist() == ["a-1", "a-2", "a-3", "a-4"]
    assert valid.schema.field("account_id").type == pa.string()
    assert quarantine.column("account_id").to_pylist() == ["a-2", "a-2"]
    assert set(quarantine.column(REASON_COLUMN).to_pylist()) == {"duplicate account_id"}
    assert profile.duplicate_rows == 2
    assert profile.reason_counts == {"duplicate account_id": 2}


def _large(batch: pa.RecordBatch) -> pa.Schema:
    index = batch.schema.get_field_index("account_id")
    return batch.schema.set(index, pa.field("account_id", pa.large_string()))


def test_two_column_keys_are_duplicates_only_together() -> None:
    key = (
        Column("region_code", Kind.STRING, required=True),
        Column("account_id", Kind.INTEGER, required=True),
    )
    contract = credit_contract(key=key)
    keys = {
        "region_code": pa.array(["eu", "us", "eu", "us", "eu", None]),
        "account_id": pa.array([1, 1, 2, 1, 1, 3], pa.int32()),
    }
    profile, valid, quarantine = _validate(contract, DAY, credit_batch(6, keys=keys))
    pairs = list(
        zip(
            valid.column("region_code").to_pylist(),
            valid.column("account_id").to_pylist(),
            strict=True,
        )
    )
    assert pairs == [("eu", 1), ("us", 1), ("eu", 2)]
    assert quarantine.column(REASON_COLUMN).to_pylist() == [
        "duplicate (region_code, account_id)",
        "duplicate (region_code, account_id)",
        "region_code is null",
    ]
    assert profile.duplicate_rows == 2
    descriptions = {o.name: o.description for o in judge(profile, POLICY, contract)}
    duplicates = descriptions["duplicate_keys_within_limit"]
    assert "2 repeated (region_code, account_id) rows" in duplicates


def test_duplicate_detection_reads_only_the_key_columns() -> None:
    key = (Column("region_code", Kind.STRING), Column("account_id", Kind.INTEGER))
    contract = credit_contract(key=key)
    keys = {"region_code": pa.array(["eu", "eu"]), "account_id": pa.array([7, 7])}
    batch = credit_batch(2, keys=keys)
    asked: list[list[str] | None] = []

    def source(columns: list[str] | None = None):
        asked.append(columns)
        yield batch.select(columns) if columns else batch

    repeated = duplicated_keys(source, contract)
    assert asked == [["region_code", "account_id"]]
    assert repeated.dtype == np.uint64 and repeated.size == 1


def test_hourly_rows_outside_the_hour_are_quarantined() -> None:
    contract = credit_contract(HOURLY)
    key = "2026-11-01-06:00"
    hours = [
        dt.datetime(2026, 11, 1, 6),
        dt.datetime(2026, 11, 1, 7),
        dt.datetime(2026, 11, 1, 6),
        dt.datetime(2026, 11, 1, 5, 59),
    ]
    batch = credit_batch(4, partition_column=None)
    # Naive nanosecond timestamps (read as UTC) become the canonical UTC microseconds.
    batch = batch.append_column("event_hour", pa.array(hours, pa.timestamp("ns")))
    profile, valid, quarantine = _validate(contract, key, batch)
    assert valid.column("customer_id").to_pylist() == [1, 3]
    assert valid.schema.field("event_hour").type == pa.timestamp("us", tz="UTC")
    assert set(valid.column("event_hour").to_pylist()) == {HOURLY.value(key)}
    assert _reasons(quarantine, "customer_id") == {
        2: "event_hour outside partition",
        4: "event_hour outside partition",
    }
    assert profile.reason_counts == {"event_hour outside partition": 2}


def test_daily_rows_of_another_day_or_without_a_day_are_quarantined() -> None:
    contract = credit_contract()
    batch = credit_batch(3)
    days = pa.array([dt.date(2026, 11, 2), dt.date(2026, 11, 3), None], pa.date32())
    batch = batch.set_column(batch.schema.get_field_index("event_date"), "event_date", days)
    _, valid, quarantine = _validate(contract, DAY, batch)
    assert valid.column("customer_id").to_pylist() == [1]
    assert _reasons(quarantine, "customer_id") == {
        2: "event_date outside partition",
        3: "event_date is null",
    }


def test_unpartitioned_deployment_has_no_partition_column() -> None:
    contract = credit_contract(UNPARTITIONED)
    batch = credit_batch(5, partition_column=None)
    profile, valid, quarantine = _validate(contract, "all", batch)
    assert profile.schema_problems == []
    assert valid.num_rows == 5 and quarantine.num_rows == 0
    assert valid.schema.names[:2] == ["customer_id", "age"]


def test_schema_problems_name_keys_partition_and_features() -> None:
    contract = credit_contract(HOURLY, key=(Column("account_id", Kind.STRING, required=True),))
    batch = credit_batch(2)  # customer_id, a daily event_date, no event_hour
    batch = batch.set_column(batch.schema.get_field_index("age"), "age", pa.array(["30", "40"]))
    assert schema_problems(batch.schema, contract) == [
        "missing column 'account_id' (string)",
        "column 'age' is string, expected integer",
        "missing partition column 'event_hour' (timestamp)",
    ]
    hourly = batch.append_column("event_hour", pa.array([dt.date(2026, 11, 1)] * 2))
    assert "partition column 'event_hour' is date32[day], expected timestamp" in schema_problems(
        hourly.schema, contract
    )


def test_row_rules_ranges_categories_required_and_null_rates() -> None:
    contract = credit_contract()
    batch = credit_batch(4)
    changes = {
        "age": pa.array([17, 30, 30, 30], pa.int32()),
        "region": pa.array(["west", "mars", None, "west"]),
        "annual_income": pa.array([1.0, 2.0, None, float("inf")]),
        "months_since_last_delinquency": pa.array([None] * 4, pa.float64()),
    }
    for name, values in changes.items():
        batch = batch.set_column(batch.schema.get_field_index(name), name, values)
    profile, valid, quarantine = _validate(contract, DAY, batch)
    assert _reasons(quarantine, "customer_id") == {
        1: "age < 18",
        2: "region unknown category",
        3: "annual_income is null",
        4: "annual_income > 1e+08; annual_income is not finite",
    }
    assert valid.num_rows == 0
    outcomes = {o.name: o for o in judge(profile, POLICY, contract)}
    # The all-null optional column fails even though its own limit is 90%.
    assert outcomes["null_rates_within_limits"].passed is False
    assert "months_since_last_delinquency: 100.0% null (limit 90%)" in (
        outcomes["null_rates_within_limits"].description
    )


def test_to_canonical_keeps_key_family_and_drops_extras() -> None:
    key = (Column("account_id", Kind.STRING, required=True),)
    contract = credit_contract(key=key)
    batch = credit_batch(2, keys={"account_id": pa.array(["x", "y"]).dictionary_encode()})
    canonical = to_canonical(batch, contract)
    assert canonical.schema == contract.validated_schema()
    assert canonical.column(0).to_pylist() == ["x", "y"]
    assert pc.all(pc.equal(canonical.column("event_date"), pa.scalar(dt.date(2026, 11, 2)))).as_py()


@pytest.mark.parametrize("with_reason", [False, True])
def test_canonical_schema_is_the_contracts_validated_schema(with_reason: bool) -> None:
    contract = credit_contract()
    schema = canonical_schema(contract, with_reason=with_reason)
    assert schema.names[: len(contract.validated_schema())] == contract.validated_schema().names
    assert (schema.names[-1] == REASON_COLUMN) is with_reason
    # Quarantined rows may lack a key: every column of the quarantine is nullable.
    assert schema.field("customer_id").nullable is with_reason
