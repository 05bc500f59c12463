"""The whole loop as users run it, over real servers on loopback: ``dagster dev`` (webserver and
daemon) on the repo's workspace, a real ``mlflow server`` and the platform's webhook receiver.

A backfill of three partitions is launched through the GraphQL API and completes; then a data
scientist registers a new version and moves the alias in MLflow, MLflow delivers the webhook
to the receiver, the daemon's ``mlflow_model_update_sensor`` launches the re-scoring run on its
own, and the prediction tables end up carrying the new version.

The credit_risk deployment runs here from a deployments folder of the test's own: its model is
``credit_risk_loop`` and its source table lies in the test's data folder.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import dagster as dg
import pytest

from batch_inference_platform.api.app import create_app
from batch_inference_platform.config import load_settings
from batch_inference_platform.definitions import build_definitions
from batch_inference_platform.defs.scope import DeploymentScope
from batch_inference_platform.lib.deployments.folder import read_deployments
from batch_inference_platform.lib.inbox.store import WebhookInbox
from batch_inference_platform.lib.lake.layout import DeploymentTables, LakeLayout
from batch_inference_platform.lib.registry.webhooks import register_webhook

from .conftest import CREDIT, ENV, read_day, write_deployment
from .graphql import GraphQL
from .servers import dagster_dev, mlflow_server, served

MODEL = "credit_risk_loop"
SECRET = "loop-secret"
DAYS = [dt.date(2026, 11, d) for d in (2, 3, 4)]
SCORING_ASSETS = ["validated_features", "model_versions", "predictions", "catalog_entries"]
SENSOR = f"{CREDIT}__mlflow_model_update_sensor"

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("dagster_dev_loop")
    with mlflow_server(root / "mlflow") as tracking:
        data = root / "data"
        data.mkdir()
        folder = root / "deployments"
        write_deployment(
            folder,
            CREDIT,
            {
                "model": {"name": MODEL},
                "source": {"table": str(data / "features" / CREDIT)},
            },
        )
        env = {
            ENV + "DATA_DIR": str(data),
            ENV + "LAKE__ROOT": str(data / "lake"),
            ENV + "MLFLOW__TRACKING_URI": tracking,
            ENV + "MLFLOW__REGISTRY_URI": "",
            ENV + "MLFLOW__ARTIFACT_ROOT": str(data / "artifacts"),
            ENV + "DEPLOYMENTS_DIR": str(folder),
            ENV + "API__INBOX_URL": f"sqlite:///{data / 'inbox.db'}",
            "MLFLOW_WEBHOOK_SECRET": SECRET,
        }
        with pytest.MonkeyPatch.context() as patch:
            for key, value in env.items():
                patch.setenv(key, value)
            settings = load_settings()
            app = create_app(settings.application.api.inbox_url)
        deployment = read_deployments(
            settings.project_root, str(folder), lake_root=settings.application.lake.root
        )[CREDIT]
        assert deployment.model_name == MODEL
        with served(app) as receiver, dagster_dev(root / "dagster_home", env) as webserver:
            register_webhook(tracking, url=receiver + "/api/v1/webhooks/mlflow", secret=SECRET)
            yield {
                "settings": settings,
                "scope": DeploymentScope(deployment),
                "tables": LakeLayout(settings.application.lake.root).deployment(deployment),
                "defs": build_definitions(settings),
                "graphql": GraphQL(webserver),
                "instance": dg.DagsterInstance.ephemeral(tempdir=str(root / "local_runs")),
                "inbox": WebhookInbox(settings.application.api.inbox_url),
            }


def _train(loop: dict[str, Any], num_boost_round: int) -> None:
    """What a data scientist does outside Dagster: train, register, move the alias."""
    defs: dg.Definitions = loop["defs"]
    scope: DeploymentScope = loop["scope"]
    result = defs.resolve_job_def(scope.job_name("train_demo_model_job")).execute_in_process(
        instance=loop["instance"],
        run_config={
            "ops": {_op(scope, "demo_model"): {"config": {"num_boost_round": num_boost_round}}}
        },
    )
    assert result.success


def _op(scope: DeploymentScope, asset: str) -> str:
    return "__".join(scope.key(asset).path)


def _location(graphql: GraphQL) -> tuple[str, str]:
    data = graphql(
        "{ repositoriesOrError { ... on RepositoryConnection { nodes { name location { name } } }"
        " ... on PythonError { message } } }"
    )["repositoriesOrError"]
    assert "nodes" in data, data
    (repo,) = data["nodes"]
    return repo["location"]["name"], repo["name"]


def test_backfill_then_promotion_rescored_by_the_daemon(loop: dict[str, Any]) -> None:
    graphql: GraphQL = loop["graphql"]
    defs: dg.Definitions = loop["defs"]
    scope: DeploymentScope = loop["scope"]
    tables: DeploymentTables = loop["tables"]

    # Features for three days, then v1 of the model in the MLflow server.
    for day in DAYS:
        generated = defs.resolve_job_def(
            scope.job_name("generate_features_job")
        ).execute_in_process(
            partition_key=day.isoformat(),
            instance=loop["instance"],
            run_config={"ops": {_op(scope, "feature_tables"): {"config": {"rows": 3000}}}},
        )
        assert generated.success
    _train(loop, num_boost_round=20)

    # A backfill of three partitions through the GraphQL API, as the UI launches it.
    launched = graphql(
        "mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams:"
        " $params) { __typename ... on LaunchBackfillSuccess { backfillId }"
        " ... on PythonError { message } ... on InvalidSubsetError { message } } }",
        params={
            "partitionNames": [day.isoformat() for day in DAYS],
            "assetSelection": [{"path": scope.key(key).path} for key in SCORING_ASSETS],
        },
    )["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill_id = launched["backfillId"]

    def backfill_done() -> str | None:
        status = graphql(
            "query($id: String!) { partitionBackfillOrError(backfillId: $id) {"
            " ... on PartitionBackfill { status } } }",
            id=backfill_id,
        )["partitionBackfillOrError"]["status"]
        return status if status not in ("REQUESTED", "CANCELING", "FAILING") else None

    assert graphql.wait("the backfill", backfill_done, timeout=300) in (
        "COMPLETED",
        "COMPLETED_SUCCESS",
    )
    for day in DAYS:
        assert set(read_day(tables.predictions, day).column("model_version").to_pylist()) == {1}

    # The sensor is switched on in the UI; its first tick finds nothing to re-score.
    location, repository = _location(graphql)
    started = graphql(
        "mutation($selector: SensorSelector!) { startSensor(sensorSelector: $selector) {"
        " __typename ... on Sensor { sensorState { status } } ... on PythonError { message } } }",
        selector={
            "repositoryLocationName": location,
            "repositoryName": repository,
            "sensorName": SENSOR,
        },
    )["startSensor"]
    assert started["__typename"] == "Sensor", started

    # A new version takes the alias in MLflow; the webhook reaches the inbox.
    _train(loop, num_boost_round=30)
    inbox: WebhookInbox = loop["inbox"]
    graphql.wait(
        "the alias webhook",
        lambda: [
            e
            for e in inbox.read_after(0)
            if e.event == "model_version_alias.created" and e.payload["data"]["version"] == "2"
        ],
        timeout=60,
        every=0.5,
    )

    # The daemon's sensor launches the re-scoring on its own; it completes with v2.
    def rescored() -> list[dict[str, Any]] | None:
        runs = graphql.runs({"model_version": "2"})
        done = [r for r in runs if r["status"] in ("SUCCESS", "FAILURE", "CANCELED")]
        return runs if runs and len(done) == len(runs) else None

    runs = graphql.wait("the re-scoring run", rescored, timeout=240)
    assert [r["status"] for r in runs] == ["SUCCESS"]
    tags = {t["key"]: t["value"] for t in runs[0]["tags"]}
    assert tags["dagster/sensor_name"] == SENSOR
    assert tags["dagster/run_key"] == f"{CREDIT}:{MODEL}:v2:2026-11-02..2026-11-04"
    assert tags["deployment"] == CREDIT
    for day in DAYS:
        assert set(read_day(tables.predictions, day).column("model_version").to_pylist()) == {2}
