"""The whole loop as users run it, over real servers on loopback: ``dagster dev`` (webserver and
daemon) on the repo's workspace, a real ``mlflow server`` and the platform's webhook receiver.

A backfill of three partitions is launched through the GraphQL API and completes; then a data
scientist registers a new version and moves the alias in MLflow, MLflow delivers the webhook
to the receiver, the daemon's ``mlflow_model_update_sensor`` launches the re-scoring run on its
own, and the prediction tables end up carrying the new version. Then promotions as they happen:
a repeated delivery starts nothing, a rollback re-scores, a move while a run is queued ends with
every day carrying the champion and every run's tags matching what it wrote, and a move with
the receiver unreachable is found by polling. Each move's latency (alias move -> run requested
-> predictions committed) is printed, and written as JSON to ``$BIP_PROMOTION_LATENCY`` if set.

The credit_risk deployment runs here from a deployments folder of the test's own: its model is
``credit_risk_loop`` and its source table lies in the test's data folder.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import dagster as dg
import pytest
from mlflow import MlflowClient

from batch_inference_platform.api.app import create_app
from batch_inference_platform.config import load_settings
from batch_inference_platform.definitions import build_definitions
from batch_inference_platform.defs.scope import DeploymentScope
from batch_inference_platform.lib.deployments.folder import read_deployments
from batch_inference_platform.lib.inbox.signatures import sign_mlflow
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
            hook = register_webhook(
                tracking, url=receiver + "/api/v1/webhooks/mlflow", secret=SECRET
            )
            yield {
                "tracking": tracking,
                "receiver": receiver,
                "hook": hook,
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
    assert tags["dagster/run_key"].startswith(f"{CREDIT}:{MODEL}@champion=v2@")
    assert tags["dagster/run_key"].endswith(":2026-11-02..2026-11-04")
    assert tags["bip/requested_model_version"] == tags["bip/scored_model_version"] == "2"
    assert tags["deployment"] == CREDIT
    for day in DAYS:
        assert set(read_day(tables.predictions, day).column("model_version").to_pylist()) == {2}


RUN_FIELDS = "runId status creationTime endTime tags { key value }"
LATENCIES: list[dict[str, Any]] = []


def _sensor_runs(graphql: GraphQL) -> list[dict[str, Any]]:
    """Every run the promotion sensor started, oldest first, with its tags as a dict."""
    data = graphql(
        "query($filter: RunsFilter) { runsOrError(filter: $filter) { ... on Runs { results {"
        f" {RUN_FIELDS} }} }} }} }}",
        filter={"tags": [{"key": "dagster/sensor_name", "value": SENSOR}]},
    )["runsOrError"]["results"]
    for run in data:
        run["tags"] = {t["key"]: t["value"] for t in run["tags"]}
    return sorted(data, key=lambda r: r["creationTime"])


def _ticks(loop: dict[str, Any]) -> list[dict[str, Any]]:
    """The sensor's recent ticks, newest first."""
    location, repository = _location(loop["graphql"])
    data = loop["graphql"](
        "query($selector: SensorSelector!) { sensorOrError(sensorSelector: $selector) {"
        " ... on Sensor { sensorState { ticks(limit: 20) { timestamp endTimestamp status"
        " skipReason runIds } } } } }",
        selector={
            "repositoryLocationName": location,
            "repositoryName": repository,
            "sensorName": SENSOR,
        },
    )["sensorOrError"]
    return data["sensorState"]["ticks"]


def _judged_current(loop: dict[str, Any], after: float, version: int) -> dict[str, Any] | None:
    """A tick after ``after`` that asked the registry and found every recent day carrying
    (or being re-scored with) ``version``: the sensor has settled."""
    for tick in _ticks(loop):
        reason = tick["skipReason"] or ""
        if tick["timestamp"] > after and "already carry" in reason and f"v{version}" in reason:
            return tick
    return None


def _promote(loop: dict[str, Any], version: int) -> float:
    """Move the serving alias in MLflow, as a data scientist does; returns when."""
    client = MlflowClient(tracking_uri=loop["tracking"], registry_uri=loop["tracking"])
    moved = time.time()
    client.set_registered_model_alias(MODEL, "champion", str(version))
    return moved


def _days(loop: dict[str, Any]) -> dict[str, set[Any]]:
    tables: DeploymentTables = loop["tables"]
    return {
        day.isoformat(): set(read_day(tables.predictions, day).column("model_version").to_pylist())
        for day in DAYS
    }


def _commits_by_run(loop: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The prediction table's commits, grouped by the Dagster run that wrote them."""
    tables: DeploymentTables = loop["tables"]
    found: dict[str, list[dict[str, Any]]] = {}
    for commit in tables.predictions.open().history():
        if commit.get("dagster_run_id"):
            found.setdefault(commit["dagster_run_id"], []).append(commit)
    return found


def _new_run(graphql: GraphQL, known: set[str], timeout: float, every: float = 0.2) -> dict:
    """The first sensor run not in ``known``."""
    return graphql.wait(
        "a new re-scoring run",
        lambda: next((r for r in _sensor_runs(graphql) if r["runId"] not in known), None),
        timeout=timeout,
        every=every,
    )


def _finished(graphql: GraphQL, run_id: str, timeout: float = 240) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        run = next(r for r in _sensor_runs(graphql) if r["runId"] == run_id)
        return run if run["status"] in ("SUCCESS", "FAILURE", "CANCELED") else None

    return graphql.wait(f"run {run_id}", done, timeout=timeout, every=0.5)


def _latency(loop: dict[str, Any], what: str, moved: float, run: dict[str, Any]) -> None:
    """Record alias move -> run requested -> predictions committed for one promotion."""
    commits = _commits_by_run(loop).get(run["runId"], [])
    committed = max(c["timestamp"] for c in commits) / 1000 if commits else None
    figures = {
        "case": what,
        "run_requested_s": round(run["creationTime"] - moved, 2),
        "predictions_committed_s": round(committed - moved, 2) if committed else None,
        "partitions": len(commits),
    }
    LATENCIES.append(figures)
    print(f"promotion latency: {json.dumps(figures)}")
    target = os.environ.get("BIP_PROMOTION_LATENCY")
    if target:
        with open(target, "w") as out:
            json.dump(LATENCIES, out, indent=1)


def _deliver(loop: dict[str, Any], payload: dict[str, Any], delivery_id: str) -> str:
    """POST a signed MLflow delivery to the receiver; the receiver's status word."""
    body = json.dumps(payload).encode()
    stamp = str(int(time.time()))
    request = urllib.request.Request(
        loop["receiver"] + "/api/v1/webhooks/mlflow",
        data=body,
        headers={
            "content-type": "application/json",
            "X-MLflow-Delivery-Id": delivery_id,
            "X-MLflow-Timestamp": stamp,
            "X-MLflow-Signature": sign_mlflow(SECRET, delivery_id, stamp, body),
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)["status"]


def test_promotions_repeats_rollbacks_and_moves_while_queued(loop: dict[str, Any]) -> None:
    """Runs after the test above (the days carry v2, the sensor is on)."""
    graphql: GraphQL = loop["graphql"]
    inbox: WebhookInbox = loop["inbox"]
    assert _days(loop) == {day.isoformat(): {2} for day in DAYS}
    first = _sensor_runs(graphql)
    assert len(first) == 1

    # A repeated delivery of the move to v2: the re-sent id is a duplicate; the same move
    # under a new id makes the sensor ask the registry, which starts nothing.
    (delivered,) = [
        e
        for e in inbox.read_after(0)
        if e.event == "model_version_alias.created" and e.payload["data"]["version"] == "2"
    ]
    assert _deliver(loop, delivered.payload, delivered.delivery_id) == "duplicate"
    repeated = time.time()
    assert _deliver(loop, delivered.payload, str(uuid.uuid4())) == "accepted"
    graphql.wait("a tick judging v2 current", lambda: _judged_current(loop, repeated, 2), 60, 1)
    assert [r["runId"] for r in _sensor_runs(graphql)] == [first[0]["runId"]]

    # Rollback to v1 after the v2 run finished: a new promotion, re-scored back to v1.
    moved = _promote(loop, 1)
    rollback = _new_run(graphql, {first[0]["runId"]}, timeout=60)
    assert rollback["tags"]["bip/requested_model_version"] == "1"
    rollback = _finished(graphql, rollback["runId"])
    assert rollback["status"] == "SUCCESS"
    assert _days(loop) == {day.isoformat(): {1} for day in DAYS}
    _latency(loop, "webhook: rollback v2 -> v1", moved, rollback)

    # v2 again, and back to v1 while that run is queued.
    known = {r["runId"] for r in _sensor_runs(graphql)}
    moved = _promote(loop, 2)
    queued = _new_run(graphql, known, timeout=60, every=0.1)
    back = _promote(loop, 1)
    _latency(loop, "webhook: v1 -> v2 (superseded before it ran)", moved, queued)
    assert queued["status"] in ("QUEUED", "NOT_STARTED", "STARTING", "STARTED"), queued
    _finished(graphql, queued["runId"])
    graphql.wait(
        "the sensor to settle on v1",
        lambda: _judged_current(loop, max(back, _last_end(graphql)), 1),
        timeout=240,
        every=1,
    )
    assert _days(loop) == {day.isoformat(): {1} for day in DAYS}
    _assert_tags_match_writes(loop)

    # The receiver unreachable (the webhook removed): polling finds the move.
    client = MlflowClient(tracking_uri=loop["tracking"], registry_uri=loop["tracking"])
    client.delete_webhook(loop["hook"])
    known = {r["runId"] for r in _sensor_runs(graphql)}
    moved = _promote(loop, 2)
    polled = _new_run(graphql, known, timeout=90)
    assert polled["tags"]["bip/promotion_source"] == "registry polling"
    polled = _finished(graphql, polled["runId"])
    assert polled["status"] == "SUCCESS"
    assert _days(loop) == {day.isoformat(): {2} for day in DAYS}
    _latency(loop, "polling (no webhook): v1 -> v2", moved, polled)
    _assert_tags_match_writes(loop)
    cheap = sorted(
        t["endTimestamp"] - t["timestamp"]
        for t in _ticks(loop)
        if t["endTimestamp"] and (t["skipReason"] or "").startswith("no delivery about")
    )
    if cheap:
        print(
            f"cheap tick seconds (daemon view): median {cheap[len(cheap) // 2]:.3f}, n={len(cheap)}"
        )


def _last_end(graphql: GraphQL) -> float:
    return max((r["endTime"] or 0.0) for r in _sensor_runs(graphql))


def _assert_tags_match_writes(loop: dict[str, Any]) -> None:
    """Every sensor run wrote only the version it was requested for, and its tags say what it
    did: ``scored vN`` with commits of vN, or ``superseded`` with no commits."""
    commits = _commits_by_run(loop)
    for run in _sensor_runs(loop["graphql"]):
        tags, written = run["tags"], commits.get(run["runId"], [])
        requested = tags["bip/requested_model_version"]
        assert {c["model_version"] for c in written} <= {requested}, (tags, written)
        if written:
            assert tags["bip/outcome"] == f"scored v{requested}", tags
            assert tags["bip/scored_model_version"] == requested
        else:
            assert tags["bip/outcome"].startswith("superseded by v"), tags
