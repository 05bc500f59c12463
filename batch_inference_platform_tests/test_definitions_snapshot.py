"""The shape of the local code location, pinned in ``snapshots/definitions.json``: every
deployment's group (``credit_risk``, ``churn``) and the platform's own group around them.

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
from batch_inference_platform.lib.deployments.folder import read_deployments
from batch_inference_platform.lib.features.generators import GENERATORS
from batch_inference_platform.lib.lake.tables import DeltaLocation, replace_partition

from .conftest import write_deployment

SNAPSHOT = Path(__file__).parent / "snapshots" / "definitions.json"
REPO_ROOT = Path(__file__).resolve().parents[1]


def _partitions(partitions_def: dg.PartitionsDefinition | None) -> dict[str, str] | None:
    if partitions_def is None:
        return None
    if isinstance(partitions_def, dg.DailyPartitionsDefinition):
        return {
            "type": "daily",
            "start_date": partitions_def.start.date().isoformat(),
            "timezone": partitions_def.timezone,
        }
    if isinstance(partitions_def, dg.HourlyPartitionsDefinition):
        return {
            "type": "hourly",
            "start": partitions_def.start.isoformat(),
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


DEPLOYMENTS = ("credit_risk", "churn")
"""The package's deployments: each is a group of its own."""
DEPLOYMENT_ASSETS = (
    "feature_tables",
    "validated_features",
    "model_versions",
    "predictions",
    "catalog_entries",
    "archived_features",
)


def test_snapshot_pins_the_scoring_contract() -> None:
    """Guards the snapshot file itself against a careless regeneration: every deployment
    has its own group, checks, partitions and jobs."""
    snapshot = json.loads(SNAPSHOT.read_text())
    assets = snapshot["assets"]
    for name in DEPLOYMENTS:
        for asset in (*DEPLOYMENT_ASSETS, "demo_model"):
            assert assets[f"{name}/{asset}"]["group"] == name, (name, asset)
        validated = assets[f"{name}/validated_features"]
        assert validated["checks"] and all(c["blocking"] for c in validated["checks"].values())
        assert validated["partitions"]["start_date"] == "2026-11-01"
        assert validated["deps"] == [f"{name}/feature_tables"]
        assert assets[f"{name}/predictions"]["deps"] == [
            f"{name}/model_versions",
            f"{name}/validated_features",
        ]
        assert snapshot["jobs"][f"{name}__score_partition_job"] == [
            f"{name}/archived_features",
            f"{name}/catalog_entries",
            f"{name}/model_versions",
            f"{name}/predictions",
            f"{name}/validated_features",
        ]
        assert f"{name}__score_latest_partition_schedule" in snapshot["schedules"]
    # Real-time insights score with realtime.deployment's serving model (credit_risk).
    assert assets["customer_insights"]["deps"] == [
        "credit_risk/model_versions",
        "customer_activity_windows",
    ]
    assert {asset["group"] for key, asset in assets.items() if "/" not in key} == {"platform"}
    # Without Kafka (the local snapshot) no sensor waits for client requests or their runs.
    assert not {"client_request_sensor", "client_job_succeeded"} & set(snapshot["sensors"])


def test_prod_observes_features_and_trains_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Outside local, each deployment observes its source table (which must exist: the load
    reads its schema) and trains nothing; the jobs are each deployment's and the platform's."""
    folder = tmp_path / "deployments"
    for name, deployment in read_deployments(REPO_ROOT, lake_root="data/lake").items():
        assert deployment.generator is not None
        source = DeltaLocation(str(tmp_path / "sources" / name))
        partitioning = deployment.partitioning
        generator = GENERATORS[deployment.generator]
        replace_partition(
            source,
            partitioning,
            "2026-11-02",
            generator.generate(partitioning, "2026-11-02", rows=20),
            generator.schema_for(partitioning),
        )
        write_deployment(folder, name, {"source": {"table": source.uri}})
    data = tmp_path / "data"
    for key, value in {
        "ENVIRONMENT": "prod",
        "DEPLOYMENTS_DIR": str(folder),
        "DATA_DIR": str(data),
        "LAKE__ROOT": str(data / "lake"),
        "MLFLOW__TRACKING_URI": f"sqlite:///{data}/mlflow.db",
    }.items():
        monkeypatch.setenv(f"BIP__BATCH_INFERENCE__{key}", value)
    settings = load_settings()
    assert settings.application.environment == "prod"
    defs = build_definitions(settings)
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}

    assert not any(key.endswith("/demo_model") for key in keys)
    assert keys == {
        *(f"{name}/{asset}" for name in DEPLOYMENTS for asset in DEPLOYMENT_ASSETS),
        "customer_activity_windows",
        "customer_insights",
        "sla_report",
        "lake_maintenance",
    }
    for name in DEPLOYMENTS:
        features = graph.get(dg.AssetKey([name, "feature_tables"]))
        assert features.is_observable
        assert not features.is_materializable
        assert graph.get(dg.AssetKey([name, "model_versions"])).parent_keys == {
            dg.AssetKey([name, "validated_features"])
        }
    jobs = {j.name for j in defs.resolve_all_job_defs() if not j.name.startswith("__")}
    assert jobs == {
        *(
            f"{name}__{job}"
            for name in DEPLOYMENTS
            for job in ("score_partition_job", "rescore_job")
        ),
        "client_inference_job",
        "realtime_insights_job",
        "sla_report_job",
        "lake_maintenance_job",
    }
    local = describe(build_definitions(load_settings(environ={})))
    assert describe(defs)["schedules"] == local["schedules"]
