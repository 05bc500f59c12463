"""Client jobs end to end, over real servers on loopback: the API under uvicorn, a
Kafka-protocol broker, `dagster dev` on a PostgreSQL-backed instance whose run queue allows
one run at a time and limits each tenant (the production dagster.yaml, generated).

Two tenants submit credit_risk jobs; the urgent job starts first; both finish; the status and
output topics carry each job's changes and results, naming the deployment. A churn job that
names only its deployment scores churn's validated table (string account keys) with churn's
serving model. A redelivered input message starts nothing new.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from batch_inference_platform.api.app import create_app
from batch_inference_platform.api.jobs import JobsService
from batch_inference_platform.config import load_settings
from batch_inference_platform.definitions import build_definitions
from batch_inference_platform.defs.scope import DeploymentScope
from batch_inference_platform.lib.deployments.folder import read_deployments
from batch_inference_platform.lib.deployments.spec import Deployment as UseCase
from batch_inference_platform.lib.inbox.job_store import JobStore
from batch_inference_platform.lib.inbox.relay import OutboxRelay
from batch_inference_platform.lib.instance_yaml import instance_yaml
from batch_inference_platform.lib.lake.tables import DeltaLocation
from batch_inference_platform.lib.messaging.kafka import KafkaPublisher, ensure_topics, read_batch
from batch_inference_platform.lib.messaging.schemas import OutputMessage, StatusMessage, decode
from batch_inference_platform.lib.messaging.settings import KafkaConfig
from batch_inference_platform.lib.messaging.topics import Topics
from batch_inference_platform.lib.tenants import load_tenants

from .conftest import ENV, read_day, write_deployment
from .graphql import GraphQL
from .kafka_broker import KafkaBroker
from .servers import dagster_dev, postgres_database, served
from .test_client_api import ACME_KEY, GLOBEX_KEY, Service, job_body, write_tenants

DAYS = ["2026-11-02", "2026-11-03"]
CREDIT, CHURN = "credit_risk", "churn"
pytestmark = pytest.mark.timeout(900)


@dataclass
class Deployment:
    api: Service
    graphql: GraphQL
    kafka: KafkaConfig
    topics: Topics
    lake_root: str
    deployments: dict[str, UseCase]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("client_jobs")
    tenants_file = write_tenants(root / "tenants.yml")
    data = root / "data"
    folder = root / "deployments"  # the package's deployments, their sources under data/
    for name in (CREDIT, CHURN):
        write_deployment(folder, name, {"source": {"table": str(data / "sources" / name)}})
    with (
        KafkaBroker(root / "broker") as broker,
        postgres_database() as jobs_url,
        postgres_database() as dagster_db,
    ):
        env = {
            ENV + "DATA_DIR": str(data),
            ENV + "LAKE__ROOT": str(data / "lake"),
            ENV + "MLFLOW__TRACKING_URI": f"sqlite:///{data}/mlflow.db",
            ENV + "MLFLOW__REGISTRY_URI": "",
            ENV + "MLFLOW__ARTIFACT_ROOT": str(data / "artifacts"),
            ENV + "KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap,
            ENV + "API__JOBS_URL": jobs_url,
            ENV + "API__TENANTS_FILE": str(tenants_file),
            ENV + "API__INBOX_URL": f"sqlite:///{data}/inbox.db",
            ENV + "DEPLOYMENTS_DIR": str(folder),
            "DAGSTER_POSTGRES_URL": dagster_db.replace("+psycopg://", "+psycopg2://"),
        }
        data.mkdir()
        with pytest.MonkeyPatch.context() as patch:
            for key, value in env.items():
                patch.setenv(key, value)
            settings = load_settings()
        app = settings.application
        declared = read_deployments(
            settings.project_root, app.deployments_dir, lake_root=app.lake.root
        )
        _prepare_lake(build_definitions(settings), declared, root)
        kafka = app.kafka.as_config()
        topics = kafka.topics
        ensure_topics(kafka, topics.all())
        tenants = load_tenants(tenants_file, app.lake.root)
        home = root / "dagster_home"
        home.mkdir()
        (home / "dagster.yaml").write_text(
            instance_yaml(max_concurrent_runs=1, tenants=tenants, azure_compute_logs=False)
        )
        store = JobStore(jobs_url, topics)
        api = create_app(
            app.api.inbox_url,
            jobs=JobsService(store, tenants, max_days=31, deployments=declared),
            relay=OutboxRelay(store, lambda: KafkaPublisher(kafka, timeout_seconds=3)),
        )
        with served(api) as url, dagster_dev(home, env) as webserver:
            yield Deployment(
                Service(url, store, broker, kafka, topics),
                GraphQL(webserver),
                kafka,
                topics,
                app.lake.root,
                declared,
            )


def _prepare_lake(defs: dg.Definitions, deployments: dict[str, UseCase], root: Path) -> None:
    """Two validated days and a registered champion of credit_risk and of churn, as the
    platform's own runs leave them."""
    with dg.DagsterInstance.ephemeral(tempdir=str(root / "prep")) as instance:
        for name in (CREDIT, CHURN):
            scope = DeploymentScope(deployments[name])
            for day in DAYS:
                rows = {"feature_tables": {"rows": 2000}}
                _run(defs, instance, scope, "generate_features_job", day, rows)
            rounds = {"demo_model": {"num_boost_round": 20}}
            _run(defs, instance, scope, "train_demo_model_job", None, rounds)
            for day in DAYS:
                _run(defs, instance, scope, "score_partition_job", day)


def _run(
    defs: dg.Definitions,
    instance: dg.DagsterInstance,
    scope: DeploymentScope,
    job: str,
    partition: str | None,
    config: dict[str, dict[str, Any]] | None = None,
) -> None:
    """The deployment's ``job`` in process; ``config`` per asset of the deployment."""
    ops = {"__".join(scope.key(asset).path): {"config": c} for asset, c in (config or {}).items()}
    result = defs.resolve_job_def(scope.job_name(job)).execute_in_process(
        partition_key=partition, instance=instance, run_config={"ops": ops} if ops else None
    )
    assert result.success, (scope.name, job, partition)


def _messages(deployment: Deployment, topic: str) -> list[bytes]:
    records, _ = read_batch(deployment.kafka, topic, {}, max_messages=10_000, timeout_seconds=3)
    return [record.value for record in records]


def _finished(deployment: Deployment, jobs: list[tuple[str, str]]) -> list[dict[str, Any]] | None:
    """The jobs' views once all are finished (each read with its tenant's key), else None."""
    views = []
    for job_id, key in jobs:
        status, view = deployment.api.call("GET", f"/api/v1/batch/inference/{job_id}", key=key)
        assert status == 200, view
        views.append(view)
    done = all(v["status"] in ("succeeded", "failed", "canceled") for v in views)
    return views if done else None


def test_two_tenants_urgent_first_both_finish_and_clients_hear_of_it(
    deployment: Deployment,
) -> None:
    api = deployment.api
    status, normal = api.call(
        "POST",
        "/api/v1/batch/inference",
        job_body(partition=None, start_date=DAYS[0], end_date=DAYS[1], priority="normal"),
    )
    assert status == 202, normal
    status, urgent = api.call(
        "POST", "/api/v1/batch/inference", job_body(priority="urgent"), key=GLOBEX_KEY
    )
    assert status == 202, urgent
    jobs = [(normal["job_id"], ACME_KEY), (urgent["job_id"], GLOBEX_KEY)]
    views = deployment.graphql.wait(
        "both jobs to finish", lambda: _finished(deployment, jobs), timeout=420, every=3
    )
    assert [v["status"] for v in views] == ["succeeded", "succeeded"], views

    # One run each, tagged with tenant and priority; the urgent one started first.
    runs = {}
    for job_id, _ in jobs:
        (run,) = deployment.graphql.runs({"job_id": job_id})
        runs[job_id] = run
        tags = {t["key"]: t["value"] for t in run["tags"]}
        assert (tags["dagster/run_key"], tags["deployment"]) == (job_id, CREDIT)
    assert runs[urgent["job_id"]]["startTime"] < runs[normal["job_id"]]["startTime"]
    assert {t["value"] for t in runs[urgent["job_id"]]["tags"] if t["key"] == "tenant"} == {
        "globex"
    }

    # The clients learn of it from Kafka: every status change, then the results.
    statuses = [decode(StatusMessage, v) for v in _messages(deployment, deployment.topics.status)]
    for job_id, _ in jobs:
        seen = [s.status for s in statuses if s.job_id == job_id]
        assert seen == ["accepted", "queued", "started", "succeeded"], (job_id, seen)
    outputs = {
        o.job_id: o
        for o in (decode(OutputMessage, v) for v in _messages(deployment, deployment.topics.output))
    }
    assert outputs[normal["job_id"]].partitions == DAYS
    assert outputs[urgent["job_id"]].partitions == DAYS[:1]
    assert outputs[normal["job_id"]].table.endswith("tenants/acme/predictions/credit_risk")
    assert {o.deployment for o in outputs.values()} >= {CREDIT}
    assert outputs[normal["job_id"]].model_name == "credit_risk_default"
    assert outputs[urgent["job_id"]].tenant == "globex" and outputs[urgent["job_id"]].rows > 0
    # Each tenant's scores are under its own root.
    scored = read_day(
        DeltaLocation(outputs[normal["job_id"]].table), dt.date.fromisoformat(DAYS[1])
    )
    assert scored.num_rows > 0


def test_a_churn_request_naming_only_its_deployment_scores_its_string_keys(
    deployment: Deployment,
) -> None:
    """No model, no table: churn's serving model over validated/churn, each row keyed by its
    account id and snapshot date, with churn's class probabilities and label."""
    api = deployment.api
    body = {"deployment": CHURN, "start_date": DAYS[0], "end_date": DAYS[1]}
    status, job = api.call("POST", "/api/v1/batch/inference", body, key=GLOBEX_KEY)
    assert status == 202, job
    assert (job["model"], job["feature_table"]) == ("churn_risk@champion", "validated/churn")
    (view,) = deployment.graphql.wait(
        "the churn job to finish",
        lambda: _finished(deployment, [(job["job_id"], GLOBEX_KEY)]),
        timeout=300,
        every=3,
    )
    assert view["status"] == "succeeded", view
    (run,) = deployment.graphql.runs({"job_id": job["job_id"]})
    assert {t["key"]: t["value"] for t in run["tags"]}["deployment"] == CHURN
    outputs = [decode(OutputMessage, v) for v in _messages(deployment, deployment.topics.output)]
    (output,) = [o for o in outputs if o.job_id == job["job_id"]]
    assert (output.deployment, output.model_name, output.partitions) == (
        CHURN,
        "churn_risk",
        DAYS,
    )
    assert output.table.endswith("tenants/globex/predictions/churn")
    churn = deployment.deployments[CHURN]
    scored = read_day(DeltaLocation(output.table), DAYS[1], churn.partitioning)
    names = scored.schema.names
    assert names[:2] == ["account_id", "snapshot_date"] and "label" in names, names
    assert str(scored.schema.field("account_id").type) == "string"
    assert {n for n in names if n.startswith("score_")} == {
        "score_high",
        "score_low",
        "score_medium",
    }
    validated = read_day(
        DeltaLocation(f"{deployment.lake_root}/validated/churn"), DAYS[1], churn.partitioning
    )
    assert scored.num_rows == validated.num_rows > 0
    accounts = sorted(str(k) for k in scored.column("account_id").to_pylist())
    assert accounts == sorted(str(k) for k in validated.column("account_id").to_pylist())


def test_a_redelivered_input_message_starts_nothing_new(deployment: Deployment) -> None:
    api = deployment.api
    status, job = api.call("POST", "/api/v1/batch/inference", job_body())
    assert status == 202
    deployment.graphql.wait(
        "the job's run", lambda: deployment.graphql.runs({"job_id": job["job_id"]}), timeout=120
    )
    # The broker delivers the same request again (a producer retry, a replayed partition).
    (original,) = [
        v for v in _messages(deployment, deployment.topics.input) if job["job_id"].encode() in v
    ]
    with KafkaPublisher(deployment.kafka) as publisher:
        publisher.publish([(deployment.topics.input, job["job_id"], original)])
    time.sleep(15)  # several sensor ticks
    assert len(deployment.graphql.runs({"job_id": job["job_id"]})) == 1
