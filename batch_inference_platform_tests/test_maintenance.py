"""``lake_maintenance`` through Dagster on a scored platform: the files that replaced
partitions and killed writers leave behind are deleted, the figures in its metadata are what
disappeared from disk, the retention protects recent files, every live row stays readable,
and one broken table fails the asset (naming it) without stopping the others."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow as pa
import pytest
from deltalake import write_deltalake

from batch_inference_platform.config import load_settings
from batch_inference_platform.definitions import build_definitions
from batch_inference_platform.defs.maintenance.assets import build_lake_maintenance
from batch_inference_platform.defs.resources import MaintenanceResource
from batch_inference_platform.lib.deployments.folder import read_deployments
from batch_inference_platform.lib.deployments.partitioning import Partitioning, PartitionKind
from batch_inference_platform.lib.deployments.spec import Deployment
from batch_inference_platform.lib.lake.tables import DeltaLocation, read_partition

from .conftest import DAY_A, DAY_B, Platform, PlatformFactory, materializations

JOB = "lake_maintenance_job"
HOUR = 3600
DAILY = Partitioning(PartitionKind.DAILY, "event_date")


CHURN = "churn"


@pytest.fixture(scope="module")
def platform(make_platform: PlatformFactory) -> Platform:
    """Two deployments, credit_risk and churn (never run), their demo sources in tmp dirs of
    their own (VACUUM never reaches a source another test writes); two scored credit_risk days,
    each scored three times (every rescore replaces the partition and leaves the replaced
    files behind); VACUUM retention 0 from the configuration."""
    platform = make_platform("maintenance", MAINTENANCE__VACUUM_RETENTION="0h")
    for day in (DAY_A, DAY_B):
        assert platform.generate(day).success
    assert platform.train().success
    for _ in range(3):
        for day in (DAY_A, DAY_B):
            assert platform.score(day).success
    return platform


# --------------------------------------------------------------------------- helpers


def lake_files(root: Path) -> dict[Path, int]:
    """Every data file under the lake root (not the Delta logs), with its size."""
    return {
        path: path.stat().st_size
        for path in root.rglob("*")
        if path.is_file() and "_delta_log" not in path.parts
    }


def declared(platform: Platform) -> list[Deployment]:
    app = platform.settings.application
    found = read_deployments(
        platform.settings.project_root, app.deployments_dir, lake_root=app.lake.root
    )
    return list(found.values())


def table_name(platform: Platform, location: DeltaLocation) -> str:
    """A table's name in the asset's metadata: its path under the lake root, else its URI."""
    return location.uri.removeprefix(platform.settings.application.lake.root.rstrip("/") + "/")


def table_rows(platform: Platform, result: dg.ExecuteInProcessResult) -> dict[str, dict[str, Any]]:
    records = materializations(result)["lake_maintenance"]["tables"].records
    return {record.data["table"]: record.data for record in records}


def live_rows(location: DeltaLocation) -> tuple[int, str]:
    """Rows of the current version and a fingerprint of their contents (order-free)."""
    dataset = location.open().to_pyarrow_dataset()
    digests = sorted(
        hashlib.sha256(repr(sorted(row.items())).encode()).hexdigest()
        for batch in dataset.to_batches()
        for row in batch.to_pylist()
    )
    return len(digests), hashlib.sha256("".join(digests).encode()).hexdigest()


def orphan(
    table_dir: Path,
    *,
    partition: str | None,
    age_hours: float,
    copy_of: Path,
    partial: bool = False,
) -> Path:
    """A data file no commit references, as a writer killed before its commit (or one that
    lost a commit race) leaves it: a whole Parquet file like ``copy_of``, or (``partial``)
    the first bytes of one; last modified ``age_hours`` ago."""
    folder = table_dir / partition if partition else table_dir
    path = folder / f"part-00000-{uuid.uuid4()}-c000.zstd.parquet"
    data = copy_of.read_bytes()
    path.write_bytes(data[: len(data) // 3] if partial else data)
    stamp = time.time() - age_hours * HOUR
    os.utime(path, (stamp, stamp))
    return path


def a_live_file(table_dir: Path, partition: str) -> Path:
    return next((table_dir / partition).glob("*.parquet"))


def run_maintenance(
    platform: Platform, retention_hours: int | None = None
) -> dg.ExecuteInProcessResult:
    if retention_hours is None:
        return platform.defs.resolve_job_def(JOB).execute_in_process(
            instance=platform.instance, raise_on_error=False
        )
    resources = {
        **(platform.defs.resources or {}),
        "maintenance": MaintenanceResource(
            vacuum_retention_hours=retention_hours, include_features=True
        ),
    }
    return dg.materialize(
        [build_lake_maintenance(declared(platform))],
        resources=resources,
        instance=platform.instance,
        raise_on_error=False,
    )


# --------------------------------------------------------------------------- tests


def test_the_retention_keeps_recent_files(platform: Platform) -> None:
    """With a 48 h retention only files unreferenced for longer go: an old orphan; not the
    files of a writer that may still be writing, nor recently replaced partitions."""
    root = Path(platform.settings.application.lake.root)
    predictions = Path(platform.tables.predictions.uri)
    day = f"event_date={DAY_A.isoformat()}"
    old = orphan(predictions, partition=day, age_hours=72, copy_of=a_live_file(predictions, day))
    recent = orphan(predictions, partition=day, age_hours=1, copy_of=old)
    before = lake_files(root)

    result = run_maintenance(platform, retention_hours=48)

    assert result.success
    gone = set(before) - set(lake_files(root))
    assert gone == {old}
    assert recent.exists()
    metadata = materializations(result)["lake_maintenance"]
    assert metadata["files_removed"] == 1
    assert metadata["bytes_removed"] == before[old]
    recent.unlink()


def test_vacuum_deletes_what_no_version_needs_and_reports_it(platform: Platform) -> None:
    root = Path(platform.settings.application.lake.root)
    layout, tables = platform.layout, platform.tables
    predictions, validated = Path(platform.tables.predictions.uri), Path(tables.validated.uri)
    catalog = Path(layout.catalog.uri)
    day_a, day_b = (f"event_date={d.isoformat()}" for d in (DAY_A, DAY_B))
    orphans = [
        orphan(predictions, partition=day_a, age_hours=2, copy_of=a_live_file(predictions, day_a)),
        orphan(
            predictions,
            partition=day_b,
            age_hours=2,
            copy_of=a_live_file(predictions, day_b),
            partial=True,
        ),
        orphan(validated, partition=day_a, age_hours=2, copy_of=a_live_file(validated, day_a)),
        orphan(catalog, partition=None, age_hours=2, copy_of=next(catalog.glob("*.parquet"))),
    ]
    located = {
        name: location
        for name, location in {
            "features": tables.features,
            "validated": tables.validated,
            "quarantine": tables.quarantine,
            "predictions": platform.tables.predictions,
            "catalog": layout.catalog,
            "archive": tables.archived_features,
        }.items()
    }
    rows_before = {name: live_rows(location) for name, location in located.items()}
    scored_before = {
        day: sorted(
            (row["customer_id"], row["score"])
            for batch in read_partition(platform.tables.predictions, DAILY, str(day))
            for row in batch.to_pylist()
        )
        for day in (DAY_A, DAY_B)
    }
    source = Path(tables.features.uri)  # outside the lake root: a tmp dir of its own

    def files() -> dict[Path, int]:
        return {**lake_files(root), **lake_files(source)}

    before = files()

    result = run_maintenance(platform)  # the configured retention: 0 h

    assert result.success
    after = files()
    gone = set(before) - set(after)
    assert set(orphans) <= gone
    metadata = materializations(result)["lake_maintenance"]
    assert metadata["vacuum_retention_hours"] == 0
    assert metadata["files_removed"] == len(gone)
    assert metadata["bytes_removed"] == sum(before[path] for path in gone)
    per_table = table_rows(platform, result)
    for name, row in per_table.items():
        if row["status"] == "absent":
            continue
        assert row["status"] == "ok", row
        table_dir = root / name
        removed = [path for path in gone if table_dir in path.parents]
        assert row["files_removed"] == len(removed), name
        assert row["bytes_removed"] == sum(before[path] for path in removed), name
        assert row["live_files"] == len([p for p in after if table_dir in p.parents]), name
    assert per_table["predictions/credit_risk"]["files_removed"] >= 2 * 2 + 2
    # Every deployment's tables are covered; never-written ones (churn's, the real-time
    # tables) are skipped; everything the runs wrote was maintained.
    churn = platform.layout.deployment(next(d for d in declared(platform) if d.name == CHURN))
    churn_tables = [churn.features, churn.validated, churn.quarantine, churn.predictions]
    absent = {name for name, row in per_table.items() if row["status"] == "absent"}
    assert absent == {
        "realtime/events",
        "realtime/customer_windows",
        "realtime/insights",
        "archive/features/churn",
        *(table_name(platform, location) for location in churn_tables),
    }
    maintained = [tables.validated, tables.quarantine, tables.predictions, layout.catalog]
    assert {name for name, row in per_table.items() if row["status"] == "ok"} == {
        table_name(platform, tables.features),
        "archive/features/credit_risk",
        *(table_name(platform, location) for location in maintained),
    }
    assert metadata["tables_maintained"] == 6

    # Every live row is still there and readable, the same rows as before.
    assert {name: live_rows(location) for name, location in located.items()} == rows_before
    for day, rows in scored_before.items():
        assert rows == sorted(
            (row["customer_id"], row["score"])
            for batch in read_partition(platform.tables.predictions, DAILY, str(day))
            for row in batch.to_pylist()
        )
    # A second run finds nothing more to delete.
    again = run_maintenance(platform)
    assert again.success
    assert materializations(again)["lake_maintenance"]["files_removed"] == 0
    assert files() == after


def test_one_broken_table_fails_the_asset_not_the_others(platform: Platform) -> None:
    """A real-time table with a damaged data file cannot be compacted: the asset fails naming
    it, after maintaining every other table."""
    events = platform.layout.realtime_events
    for start in range(2):
        rows = pa.table({"window": ["2026-11-02T10"] * 3, "event_id": [start, start + 2, 9]})
        write_deltalake(events.uri, rows, partition_by=["window"], mode="append")
    damaged = next(Path(events.uri).rglob("*.parquet"))
    damaged.write_bytes(damaged.read_bytes()[:20])
    archive = Path(platform.tables.archived_features.uri)  # maintained after events
    day = f"event_date={DAY_A.isoformat()}"
    stray = orphan(archive, partition=day, age_hours=1, copy_of=a_live_file(archive, day))
    try:
        result = run_maintenance(platform)

        assert not result.success
        (failure,) = result.get_step_failure_events()
        data = failure.step_failure_data.user_failure_data
        assert data is not None and data.description is not None
        assert "realtime/events" in data.description, data.description
        assert "failed for 1 of 14 tables" in data.description  # 5 of each deployment
        assert not stray.exists()  # the tables after it were maintained
        records = data.metadata["tables"].records  # type: ignore[union-attr]
        statuses = {record.data["table"]: record.data["status"] for record in records}
        assert statuses["realtime/events"] == "failed"
        assert statuses["predictions/credit_risk"] == "ok"
        assert statuses["archive/features/credit_risk"] == "ok"
    finally:
        shutil.rmtree(events.uri)


def test_the_schedule_and_retention_come_from_the_configuration() -> None:
    settings = load_settings(
        environ={
            "BIP__BATCH_INFERENCE__MAINTENANCE__SCHEDULE": "0 15 2 ? * MON",
            "BIP__BATCH_INFERENCE__MAINTENANCE__VACUUM_RETENTION": "36h",
        }
    )
    defs = build_definitions(settings)
    schedule = defs.resolve_schedule_def("lake_maintenance_schedule")
    assert schedule.cron_schedule == "15 2 * * MON"
    assert schedule.job_name == JOB
    resource = (defs.resources or {})["maintenance"]
    assert isinstance(resource, MaintenanceResource)
    assert resource.vacuum_retention_hours == 36 and resource.include_features
    default = load_settings(environ={}).application.maintenance
    assert (default.cron, default.retention_hours) == ("30 3 * * *", 7 * 24)
