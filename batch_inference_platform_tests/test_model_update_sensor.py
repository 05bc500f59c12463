"""Model promotions, end to end over real servers on loopback: a real ``mlflow server`` sends
its webhooks to the platform's receiver (real uvicorn), the deliveries land in the inbox, and
ticks of a deployment's ``<name>__mlflow_model_update_sensor`` turn an alias move into
re-scoring run requests - for that deployment only."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pytest
from dagster._core.storage.dagster_run import DagsterRun
from dagster._core.utils import make_new_run_id
from mlflow import MlflowClient

from batch_inference_platform.api.app import create_app
from batch_inference_platform.defs.inference.schedules import build_jobs
from batch_inference_platform.defs.models.sensors import (
    REQUESTED_VERSION_TAG,
    build_model_update_sensor,
)
from batch_inference_platform.defs.resources import (
    InboxResource,
    LakeResource,
    ModelRegistryResource,
)
from batch_inference_platform.defs.scope import DeploymentScope
from batch_inference_platform.lib.deployments.partitioning import Partitioning, PartitionKind
from batch_inference_platform.lib.deployments.spec import Deployment
from batch_inference_platform.lib.inbox.store import WebhookInbox
from batch_inference_platform.lib.lake.layout import LakeLayout
from batch_inference_platform.lib.lake.tables import replace_partition
from batch_inference_platform.lib.registry.webhooks import register_webhook
from batch_inference_platform.lib.scoring.kernel import prediction_schema
from batch_inference_platform.lib.scoring.outputs import OutputKind, OutputSpec

from .conftest import CREDIT, DAY_A, NUM_BOOST_ROUND, Platform, PlatformFactory
from .servers import mlflow_server, served

SECRET = "sensor-test-secret"
MODEL = "credit_risk_promoted"
DEPLOYMENT = Deployment(
    name=CREDIT,
    source_uri="unused",
    key=("customer_id",),
    partitioning=Partitioning(
        PartitionKind.DAILY, "event_date", dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    ),
    columns=None,
    model_name=MODEL,
    alias="champion",
    output=OutputSpec(OutputKind.PROBABILITY),
)
IDENTITY = pa.schema([pa.field("customer_id", pa.int64()), pa.field("event_date", pa.date32())])
PREDICTION_SCHEMA = prediction_schema(IDENTITY, DEPLOYMENT.output)


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
                LakeLayout(str(lake)).deployment(DEPLOYMENT).predictions,
                DEPLOYMENT.partitioning,
                day.isoformat(),
                [row],
                PREDICTION_SCHEMA,
                commit_metadata={"partition": day.isoformat(), "model_version": "1"},
            )
        scope = DeploymentScope(DEPLOYMENT)
        sensor = build_model_update_sensor(
            scope, build_jobs(scope, generated=False).rescore, rescore_partitions=3
        )
        assert sensor.name == "credit_risk__mlflow_model_update_sensor"
        resources = {
            "lake": LakeResource(root=str(lake)),
            "inbox": InboxResource(url=inbox_url),
            "registry": ModelRegistryResource(
                tracking_uri=mlflow_url,
                artifact_root=str(tmp_path / "a"),
                experiment="e",
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
            assert request.run_key is not None
            assert request.run_key.startswith(f"{CREDIT}:{MODEL}@champion=v2@")
            assert request.run_key.endswith(":2026-11-03..2026-11-05")
            assert request.partition_key_range == dg.PartitionKeyRange("2026-11-03", "2026-11-05")
            assert request.tags["model_version"] == "2"
            assert request.tags[REQUESTED_VERSION_TAG] == "2"
            assert request.tags["deployment"] == CREDIT
            assert request.tags["bip/promotion_source"].startswith("webhook delivery ")

            # A delivery re-sent by MLflow, or another tick, gives the same run key.
            again = sensor(
                dg.build_sensor_context(instance=instance, cursor=first.cursor, resources=resources)
            )
            assert isinstance(again, dg.SensorResult)
            assert [r.run_key for r in again.run_requests or []] == [request.run_key]

            # While that run is queued the days are being re-scored with v2: nothing more.
            queued = _queued_run(instance, request, f"{CREDIT}__rescore_job")
            busy = sensor(
                dg.build_sensor_context(instance=instance, cursor=moved.cursor, resources=resources)
            )
            assert isinstance(busy, dg.SensorResult) and not busy.run_requests

            # Back to v1 while the v2 run is still queued: the days wait for that run to end
            # before they are judged (it will score nothing: the alias left v2).
            client.set_registered_model_alias(MODEL, "champion", "1")
            _wait_for(inbox, 5)
            rolled = sensor(
                dg.build_sensor_context(instance=instance, cursor=busy.cursor, resources=resources)
            )
            assert isinstance(rolled, dg.SensorResult) and not rolled.run_requests
            assert rolled.skip_reason is not None
            assert "waiting for runs in flight" in (rolled.skip_reason.skip_message or "")
            instance.report_run_canceled(queued)
            judged = sensor(
                dg.build_sensor_context(
                    instance=instance, cursor=rolled.cursor, resources=resources
                )
            )
            assert isinstance(judged, dg.SensorResult) and not judged.run_requests  # still v1

            # v2 again, after the first v2 run ended: a new promotion, a new run key.
            client.set_registered_model_alias(MODEL, "champion", "2")
            _wait_for(inbox, 6)
            again_v2 = sensor(
                dg.build_sensor_context(
                    instance=instance, cursor=judged.cursor, resources=resources
                )
            )
            assert isinstance(again_v2, dg.SensorResult)
            (second,) = again_v2.run_requests or []
            assert second.tags[REQUESTED_VERSION_TAG] == "2"
            assert second.run_key != request.run_key

    alias_events = [e for e in inbox.read_after(0) if e.event == "model_version_alias.created"]
    assert [e.payload["data"]["version"] for e in alias_events] == ["1", "2", "1", "2"]


def _queued_run(instance: dg.DagsterInstance, request: dg.RunRequest, job: str) -> DagsterRun:
    """A queued run of ``job`` as the daemon would create it for ``request``."""
    run = DagsterRun(
        job_name=job,
        run_id=make_new_run_id(),
        tags={**request.tags, "dagster/run_key": request.run_key or ""},
        status=dg.DagsterRunStatus.NOT_STARTED,  # created, not yet launched
    )
    return instance.add_run(run)


CHURN = "churn"


def _sensor(platform: Platform) -> dg.SensorDefinition:
    """The promotion sensor of the platform's deployment, as its code location holds it."""
    name = platform.scope.job_name("mlflow_model_update_sensor")
    return platform.defs.get_repository_def().get_sensor_def(name)


def _tick(platform: Platform, cursor: str | None = None) -> dg.SensorResult:
    """One tick of the deployment's promotion sensor with the code location's resources."""
    context = dg.build_sensor_context(
        instance=platform.instance, cursor=cursor, resources=platform.defs.resources
    )
    result = _sensor(platform)(context)
    assert isinstance(result, dg.SensorResult)
    return result


def test_a_promotion_rescores_only_the_deployment_whose_model_moved(
    make_platform: PlatformFactory, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """credit_risk and churn are scored in one platform; churn's alias moves to a new version
    (and the inbox says so): churn's sensor re-scores churn's partition with it, credit_risk's
    sensor requests nothing."""
    inbox_url = f"sqlite:///{tmp_path_factory.mktemp('promotions_inbox') / 'inbox.db'}"
    credit = make_platform("promotions", API__INBOX_URL=inbox_url)
    churn = replace(credit, deployment_name=CHURN)
    for platform in (credit, churn):
        assert platform.generate(DAY_A).success
        assert platform.train().success
        assert platform.score(DAY_A).success
        assert platform.registry.by_alias(platform.model_name, platform.alias).version == 1

    # Both sensors on: every scored partition already carries its deployment's alias holder.
    before = {p.deployment_name: _tick(p) for p in (credit, churn)}
    for result in before.values():
        assert not result.run_requests
        assert result.skip_reason is not None
        assert "already carry" in (result.skip_reason.skip_message or "")

    # Churn's model moves: a new version takes its alias, and MLflow's delivery lands.
    assert churn.train(num_boost_round=NUM_BOOST_ROUND + 5).success
    assert churn.registry.by_alias(churn.model_name, churn.alias).version == 2
    assert credit.registry.by_alias(credit.model_name, credit.alias).version == 1
    WebhookInbox(inbox_url).append(
        source="mlflow",
        delivery_id="churn-promotion",
        event="model_version_alias.created",
        payload={
            "entity": "model_version_alias",
            "action": "created",
            "data": {"name": churn.model_name, "alias": churn.alias, "version": "2"},
        },
    )

    unmoved = _tick(credit, before[CREDIT].cursor)
    assert not unmoved.run_requests
    assert unmoved.skip_reason is not None
    # Churn's delivery does not mention credit_risk's model: its sensor does not even ask
    # the registry.
    assert f"no delivery about {credit.model_name}" in (unmoved.skip_reason.skip_message or "")

    moved = _tick(churn, before[CHURN].cursor)
    (request,) = moved.run_requests or []
    day = DAY_A.isoformat()
    assert request.run_key is not None
    assert request.run_key.startswith(f"{CHURN}:{churn.model_name}@{churn.alias}=v2@")
    assert request.run_key.endswith(f":{day}")
    assert request.tags["bip/promotion_source"] == "webhook delivery churn-promotion"
    assert request.partition_key == day
    assert request.tags["deployment"] == CHURN
    assert request.tags["model_version"] == "2"
    assert _sensor(churn).job_name == f"{CHURN}__rescore_job"
