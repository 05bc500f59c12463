"""Model promotions, end to end over real servers on loopback: a real ``mlflow server`` sends
its webhooks to the platform's receiver (real uvicorn), the deliveries land in the inbox, and
ticks of ``mlflow_model_update_sensor`` turn an alias move into re-scoring run requests."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest
from mlflow import MlflowClient

from batch_inference_platform.api.app import create_app
from batch_inference_platform.defs.models.sensors import build_model_update_sensor
from batch_inference_platform.defs.resources import (
    InboxResource,
    LakeResource,
    ModelRegistryResource,
)
from batch_inference_platform.lib.inbox.store import WebhookInbox
from batch_inference_platform.lib.lake.layout import LakeLayout
from batch_inference_platform.lib.lake.tables import replace_partition
from batch_inference_platform.lib.registry.webhooks import register_webhook
from batch_inference_platform.lib.scoring.kernel import prediction_schema
from batch_inference_platform.lib.scoring.outputs import OutputKind, OutputSpec

from .servers import mlflow_server, served

PREDICTION_SCHEMA = prediction_schema(OutputSpec(OutputKind.PROBABILITY))

SECRET = "sensor-test-secret"
MODEL = "credit_risk_promoted"


@pytest.fixture(scope="module")
def mlflow_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with mlflow_server(tmp_path_factory.mktemp("mlflow_server")) as url:
        yield url


def _wait_for(inbox: WebhookInbox, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while len(inbox.read_after(0)) < count:
        assert time.monotonic() < deadline, f"{len(inbox.read_after(0))} of {count} deliveries"
        time.sleep(0.2)


def test_an_alias_move_reaches_the_sensor_by_webhook(mlflow_url: str, tmp_path: Path) -> None:
    inbox_url = f"sqlite:///{tmp_path / 'inbox.db'}"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_WEBHOOK_SECRET", SECRET)
        app = create_app(inbox_url)
    inbox = WebhookInbox(inbox_url)
    with served(app) as receiver:
        hook = register_webhook(mlflow_url, url=receiver + "/api/v1/webhooks/mlflow", secret=SECRET)
        # Registering again updates the same webhook instead of adding a second one.
        assert (
            register_webhook(mlflow_url, url=receiver + "/api/v1/webhooks/mlflow", secret=SECRET)
            == hook
        )

        client = MlflowClient(tracking_uri=mlflow_url, registry_uri=mlflow_url)
        client.create_registered_model(MODEL)
        run = client.create_run(client.create_experiment("promotions"))
        for _ in range(2):
            client.create_model_version(
                MODEL, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id
            )
        client.set_registered_model_alias(MODEL, "champion", "1")
        _wait_for(inbox, 3)  # two model_version.created + one alias

        # Four days were scored by v1; when v2 takes the alias the three most recent are re-scored.
        lake = tmp_path / "lake"
        scored_days = [dt.date(2026, 11, d) for d in (2, 3, 4, 5)]
        for day in scored_days:
            row = pa.RecordBatch.from_pylist(
                [
                    {
                        "customer_id": 1,
                        "event_date": day,
                        "score": 0.1,
                        "model_name": MODEL,
                        "model_version": 1,
                        "scored_at": dt.datetime.now(dt.UTC),
                        "run_id": "r",
                    }
                ],
                schema=PREDICTION_SCHEMA,
            )
            replace_partition(
                LakeLayout(str(lake)).predictions(MODEL),
                day,
                [row],
                PREDICTION_SCHEMA,
                commit_metadata={"partition": day.isoformat(), "model_version": "1"},
            )
        sensor = build_model_update_sensor(rescore_partitions=3)
        resources = {
            "lake": LakeResource(root=str(lake)),
            "inbox": InboxResource(url=inbox_url),
            "registry": ModelRegistryResource(
                tracking_uri=mlflow_url,
                artifact_root=str(tmp_path / "a"),
                experiment="e",
                model_name=MODEL,
                alias="champion",
                model_cache_dir=str(tmp_path / "cache"),
            ),
        }
        with dg.instance_for_test() as instance:
            # The predictions already carry the alias holder: turning the sensor on re-scores
            # nothing.
            first = sensor(dg.build_sensor_context(instance=instance, resources=resources))
            assert isinstance(first, dg.SensorResult) and not first.run_requests
            assert first.skip_reason is not None
            assert "already carry" in (first.skip_reason.skip_message or "")
            assert json.loads(first.cursor or "{}")["version"] == 1

            # Nothing moved: a second tick (or a re-sent delivery) starts nothing.
            again = sensor(
                dg.build_sensor_context(instance=instance, cursor=first.cursor, resources=resources)
            )
            assert isinstance(again, dg.SensorResult) and not again.run_requests

            client.set_registered_model_alias(MODEL, "champion", "2")
            _wait_for(inbox, 4)
            moved = sensor(
                dg.build_sensor_context(instance=instance, cursor=first.cursor, resources=resources)
            )
            assert isinstance(moved, dg.SensorResult)
            # One run re-scores the three consecutive days and loads v2 once.
            (request,) = moved.run_requests or []
            assert request.run_key == f"{MODEL}:v2:2026-11-03..2026-11-05"
            assert request.partition_key_range == dg.PartitionKeyRange("2026-11-03", "2026-11-05")
            assert request.tags["model_version"] == "2"

            # A delivery re-sent by MLflow, or another tick, gives the same run key.
            again = sensor(
                dg.build_sensor_context(instance=instance, cursor=first.cursor, resources=resources)
            )
            assert isinstance(again, dg.SensorResult)
            assert [r.run_key for r in again.run_requests or []] == [request.run_key]

    alias_events = [e for e in inbox.read_after(0) if e.event == "model_version_alias.created"]
    assert [e.payload["data"]["version"] for e in alias_events] == ["1", "2"]
