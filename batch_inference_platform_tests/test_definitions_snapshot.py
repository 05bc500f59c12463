"""The shape of the local code location, pinned in ``snapshots/definitions.json``.

Any change to asset keys, deps, groups, partitions, checks, jobs, schedules or sensors shows up
as a diff here. After an intended change, regenerate the file and review it:

    UPDATE_SNAPSHOTS=1 .venv/bin/pytest batch_inference_platform_tests/test_definitions_snapshot.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from batch_inference_platform.config import load_settings
from batch_inference_platform.definitions import build_definitions

SNAPSHOT = Path(__file__).parent / "snapshots" / "definitions.json"


def _partitions(partitions_def: dg.PartitionsDefinition | None) -> dict[str, str] | None:
    if partitions_def is None:
        return None
    if isinstance(partitions_def, dg.DailyPartitionsDefinition):
        return {
            "type": "daily",
            "start_date": partitions_def.start.date().isoformat(),
            "timezone": partitions_def.timezone,
        }
    return {"type": type(partitions_def).__name__}


def describe(defs: dg.Definitions) -> dict[str, Any]:
    """A JSON-able, deterministic description of ``defs``."""
    graph = defs.resolve_asset_graph()
    assets = {}
    for key in sorted(graph.get_all_asset_keys()):
        node = graph.get(key)
        assets[key.to_user_string()] = {
            "deps": sorted(parent.to_user_string() for parent in node.parent_keys),
            "group": node.group_name,
            "kind": "materializable"
            if node.is_materializable
            else "observable"
            if node.is_observable
            else "external",
            "partitions": _partitions(node.partitions_def),
            "checks": {
                check.name: {"blocking": graph.get_check_spec(check).blocking}
                for check in sorted(node.check_keys, key=lambda c: c.name)
            },
        }
    jobs = {
        job.name: sorted(k.to_user_string() for k in job.asset_layer.executable_asset_keys)
        for job in defs.resolve_all_job_defs()
        if not job.name.startswith("__")
    }
    repository = defs.get_repository_def()
    schedules = {
        s.name: {"cron": s.cron_schedule, "timezone": s.execution_timezone, "job": s.job_name}
        for s in repository.schedule_defs
    }
    return {
        "assets": assets,
        "jobs": dict(sorted(jobs.items())),
        "schedules": dict(sorted(schedules.items())),
        "sensors": sorted(s.name for s in repository.sensor_defs),
    }


def test_local_definitions_match_the_snapshot() -> None:
    current = describe(build_definitions(load_settings(environ={})))
    text = json.dumps(current, indent=2, sort_keys=True) + "\n"
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(text)
    assert SNAPSHOT.exists(), f"no snapshot yet: run with UPDATE_SNAPSHOTS=1 to write {SNAPSHOT}"
    expected = json.loads(SNAPSHOT.read_text())
    assert current == expected, (
        "the definitions changed; if intended, rerun with UPDATE_SNAPSHOTS=1 and review the diff"
    )


def test_snapshot_pins_the_scoring_contract() -> None:
    """Guards the snapshot file itself against a careless regeneration."""
    snapshot = json.loads(SNAPSHOT.read_text())
    validated = snapshot["assets"]["validated_features"]
    assert validated["checks"] and all(c["blocking"] for c in validated["checks"].values())
    assert validated["partitions"]["start_date"] == "2026-11-01"
    assert snapshot["assets"]["predictions"]["deps"] == ["model_versions", "validated_features"]
    assert snapshot["jobs"]["score_partition_job"] == [
        "archived_features",
        "catalog_entries",
        "model_versions",
        "predictions",
        "validated_features",
    ]


def test_prod_observes_features_and_trains_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BIP__BATCH_INFERENCE__ENVIRONMENT", "prod")
    settings = load_settings()
    assert settings.application.environment == "prod"
    defs = build_definitions(settings)
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}

    assert "demo_model" not in keys
    assert keys == {
        "feature_tables",
        "validated_features",
        "model_versions",
        "predictions",
        "catalog_entries",
        "customer_activity_windows",
        "customer_insights",
        "archived_features",
        "sla_report",
        "lake_maintenance",
    }
    features = graph.get(dg.AssetKey("feature_tables"))
    assert features.is_observable
    assert not features.is_materializable
    assert graph.get(dg.AssetKey("model_versions")).parent_keys == {
        dg.AssetKey("validated_features")
    }
    jobs = {j.name for j in defs.resolve_all_job_defs() if not j.name.startswith("__")}
    assert jobs == {
        "score_partition_job",
        "rescore_job",
        "client_inference_job",
        "realtime_insights_job",
        "sla_report_job",
        "lake_maintenance_job",
    }
    local = describe(build_definitions(load_settings(environ={})))
    assert describe(defs)["schedules"] == local["schedules"]
