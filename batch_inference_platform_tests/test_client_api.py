"""The client API under a real uvicorn, with the job store in PostgreSQL and a real
Kafka-protocol broker: authentication, tenant isolation (deployments and tables), requests
defaulted from their deployment, precise errors, idempotency, the outbox across a broker
outage, and a bounded load test."""

from __future__ import annotations

import json
import statistics
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from batch_inference_platform.api.app import create_app
from batch_inference_platform.api.jobs import JobsService
from batch_inference_platform.config import load_settings
from batch_inference_platform.lib.deployments.folder import read_deployments
from batch_inference_platform.lib.inbox.job_store import JobStore
from batch_inference_platform.lib.inbox.relay import OutboxRelay
from batch_inference_platform.lib.messaging.kafka import KafkaPublisher, ensure_topics, read_batch
from batch_inference_platform.lib.messaging.schemas import InferenceRequestMessage, decode
from batch_inference_platform.lib.messaging.settings import KafkaConfig
from batch_inference_platform.lib.messaging.topics import Topics
from batch_inference_platform.lib.tenants import hash_api_key, load_tenants

from .conftest import write_deployment
from .kafka_broker import KafkaBroker
from .servers import postgres_database, served

ACME_KEY, GLOBEX_KEY = "acme-" + uuid.uuid4().hex, "globex-" + uuid.uuid4().hex
TABLE = "validated/credit_risk"
CHURN_TABLE = "validated/churn"
WHOLE = "credit_risk_whole"
"""An unpartitioned copy of credit_risk (each run scores its whole table)."""


def write_tenants(path: Path, acme_key: str = ACME_KEY, globex_key: str = GLOBEX_KEY) -> Path:
    """Two tenants: acme (one run at a time, credit_risk only) and globex (credit_risk and
    churn), each with its own tables and root."""
    path.write_text(
        f"""tenants:
  - id: acme
    api-key-sha256: {hash_api_key(acme_key)}
    default-priority: normal
    max-concurrent-runs: 1
    allowed-deployments: [credit_risk, {WHOLE}]
    allowed-input-tables: [{TABLE}, validated/{WHOLE}]
    output-root: tenants/acme
    read-recommendations: true
  - id: globex
    api-key-sha256: {hash_api_key(globex_key)}
    default-priority: high
    max-concurrent-runs: 1
    allowed-deployments: [credit_risk, churn]
    allowed-input-tables: [{TABLE}, {CHURN_TABLE}, globex/private_features]
    output-root: tenants/globex
"""
    )
    return path


@dataclass
class Service:
    url: str
    store: JobStore
    broker: KafkaBroker
    kafka: KafkaConfig
    topics: Topics

    def call(
        self, method: str, path: str, body: Any = None, key: str | None = ACME_KEY, **headers: str
    ) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if key:
            request.add_header("Authorization", f"Bearer {key}")
        for name, value in headers.items():
            request.add_header(name.replace("_", "-"), value)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")


def job_body(**overrides: Any) -> dict[str, Any]:
    """A credit_risk request for one day (its model and table by default); a None override
    leaves the field out."""
    body = {"deployment": "credit_risk", "partition": "2026-11-02", **overrides}
    return {k: v for k, v in body.items() if v is not None}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("client_api")
    tenants = write_tenants(root / "tenants.yml")
    settings = load_settings()
    with KafkaBroker(root / "broker") as broker, postgres_database() as jobs_url:
        kafka = settings.application.kafka.model_copy(
            update={"bootstrap_servers": broker.bootstrap}
        ).as_config()
        topics = kafka.topics
        ensure_topics(kafka, topics.all())
        store = JobStore(jobs_url, topics)
        folder = root / "deployments"
        write_deployment(
            folder,
            WHOLE,
            {"source": {"partition": {"kind": "none", "column": None, "start": None}}},
            source="credit_risk",
        )
        deployments = {
            **read_deployments(settings.project_root, lake_root=settings.application.lake.root),
            **read_deployments(
                settings.project_root, folder, lake_root=settings.application.lake.root
            ),
        }
        app = create_app(
            f"sqlite:///{root / 'inbox.db'}",
            jobs=JobsService(
                store, load_tenants(tenants, str(root / "lake")), 31, deployments=deployments
            ),
            relay=OutboxRelay(store, lambda: KafkaPublisher(kafka, timeout_seconds=3)),
        )
        with served(app) as url:
            yield Service(url, store, broker, kafka, topics)


def _input_messages(service: Service) -> list[InferenceRequestMessage]:
    records, _ = read_batch(
        service.kafka, service.topics.input, {}, max_messages=10_000, timeout_seconds=3
    )
    return [decode(InferenceRequestMessage, r.value) for r in records]


def _wait_published(service: Service, job_ids: set[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        seen = {m.job_id for m in _input_messages(service)}
        if job_ids <= seen:
            return
        assert time.monotonic() < deadline, f"not published: {sorted(job_ids - seen)}"
        time.sleep(0.5)


def test_a_submitted_job_is_persisted_published_and_readable(service: Service) -> None:
    status, job = service.call("POST", "/api/v1/batch/inference", job_body(priority="urgent"))
    assert status == 202, job
    assert (job["tenant"], job["status"], job["priority"]) == ("acme", "accepted", "urgent")
    assert job["output_table"] == "predictions/credit_risk"
    status, read = service.call("GET", f"/api/v1/batch/inference/{job['job_id']}")
    assert status == 200 and read["job_id"] == job["job_id"]
    status, listed = service.call("GET", "/api/v1/batch/inference?limit=500")
    assert job["job_id"] in [j["job_id"] for j in listed]
    _wait_published(service, {job["job_id"]})
    (message,) = [m for m in _input_messages(service) if m.job_id == job["job_id"]]
    assert (message.tenant, message.deployment, message.feature_table, message.priority) == (
        "acme",
        "credit_risk",
        TABLE,
        "urgent",
    )


def test_a_request_without_model_or_table_gets_its_deployments_serving_model_and_table(
    service: Service,
) -> None:
    """churn, named alone: its validated table, its serving model (churn_risk@champion)."""
    status, job = service.call(
        "POST",
        "/api/v1/batch/inference",
        job_body(
            deployment="churn", partition=None, start_date="2026-11-02", end_date="2026-11-03"
        ),
        key=GLOBEX_KEY,
    )
    assert status == 202, job
    assert {k: job[k] for k in ("deployment", "model", "feature_table", "output_table")} == {
        "deployment": "churn",
        "model": "churn_risk@champion",
        "feature_table": CHURN_TABLE,
        "output_table": "predictions/churn",
    }
    assert (job["start_date"], job["end_date"]) == ("2026-11-02", "2026-11-03")
    _wait_published(service, {job["job_id"]})
    (message,) = [m for m in _input_messages(service) if m.job_id == job["job_id"]]
    assert (message.deployment, message.model, message.feature_table) == (
        "churn",
        "churn_risk@champion",
        CHURN_TABLE,
    )


def test_a_request_may_name_a_version_or_alias_of_its_deployments_model(
    service: Service,
) -> None:
    for model, stored in [
        ("credit_risk_default/3", "credit_risk_default/3"),
        ("models:/credit_risk_default@challenger", "credit_risk_default@challenger"),
    ]:
        status, job = service.call(
            "POST", "/api/v1/batch/inference", job_body(model=model, feature_table=TABLE)
        )
        assert status == 202, job
        assert (job["deployment"], job["model"]) == ("credit_risk", stored)


def test_a_model_of_another_deployment_is_refused_naming_both(service: Service) -> None:
    before = len(service.store.list("globex", limit=1000))
    status, problem = service.call(
        "POST", "/api/v1/batch/inference", job_body(model="churn_risk@champion"), key=GLOBEX_KEY
    )
    assert status == 422, problem
    assert problem["detail"].startswith(
        "model 'churn_risk' is not the model of deployment 'credit_risk' ('credit_risk_default')"
    )
    assert len(service.store.list("globex", limit=1000)) == before


def test_a_deployment_the_tenant_may_not_use_gets_403(service: Service) -> None:
    """acme may use credit_risk only: churn is refused, even with a table acme may read."""
    before = len(service.store.list("acme", limit=1000))
    for body in (job_body(deployment="churn"), job_body(deployment="churn", feature_table=TABLE)):
        status, problem = service.call("POST", "/api/v1/batch/inference", body)
        assert status == 403, problem
        assert problem["detail"] == "tenant 'acme' may not use deployment 'churn'"
    assert len(service.store.list("acme", limit=1000)) == before


def test_an_unknown_deployment_gets_422_naming_the_declared_ones(service: Service) -> None:
    status, problem = service.call("POST", "/api/v1/batch/inference", job_body(deployment="fraud"))
    assert status == 422, problem
    assert problem["detail"] == (
        f"unknown deployment 'fraud' (declared: churn, credit_risk, {WHOLE})"
    )
    status, problem = service.call("POST", "/api/v1/batch/inference", job_body(deployment=None))
    assert status == 422 and "deployment: Field required" in problem["detail"], problem


def test_an_unpartitioned_deployment_takes_no_days(service: Service) -> None:
    """Its whole table is scored: a request names no days, and days are refused, not ignored."""
    status, job = service.call(
        "POST", "/api/v1/batch/inference", job_body(deployment=WHOLE, partition=None)
    )
    assert status == 202, job
    assert (job["start_date"], job["end_date"], job["feature_table"]) == (
        None,
        None,
        f"validated/{WHOLE}",
    )
    status, problem = service.call("POST", "/api/v1/batch/inference", job_body(deployment=WHOLE))
    assert status == 422 and "is not partitioned" in problem["detail"], problem
    status, problem = service.call("POST", "/api/v1/batch/inference", job_body(partition=None))
    assert status == 422, problem
    assert "'credit_risk' is partitioned by event_date (daily)" in problem["detail"]


@pytest.mark.parametrize(
    ("key", "detail"),
    [(None, "send the API key"), ("not-a-key", "unknown API key")],
)
def test_missing_or_wrong_credentials_get_401(
    service: Service, key: str | None, detail: str
) -> None:
    status, problem = service.call("POST", "/api/v1/batch/inference", job_body(), key=key)
    assert status == 401 and detail in problem["detail"]
    status, _ = service.call("GET", "/api/v1/batch/inference", key=key)
    assert status == 401


def test_another_tenants_table_or_jobs_are_refused(service: Service) -> None:
    before = len(service.store.list("acme", limit=1000))
    status, problem = service.call(
        "POST", "/api/v1/batch/inference", job_body(feature_table="globex/private_features")
    )
    assert status == 403
    assert problem["detail"] == "tenant 'acme' may not read table 'globex/private_features'"
    status, problem = service.call(
        "POST", "/api/v1/batch/inference", job_body(output_table="../globex/predictions")
    )
    assert status == 403
    status, problem = service.call("POST", "/api/v1/batch/inference", job_body(tenant="globex"))
    assert status == 403
    assert len(service.store.list("acme", limit=1000)) == before
    # A job of globex is invisible to acme.
    _, theirs = service.call("POST", "/api/v1/batch/inference", job_body(), key=GLOBEX_KEY)
    status, _ = service.call("GET", f"/api/v1/batch/inference/{theirs['job_id']}")
    assert status == 404
    status, _ = service.call("POST", f"/api/v1/batch/inference/{theirs['job_id']}/cancel")
    assert status == 404


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (job_body(model="credit_risk_default"), "must be 'name@alias'"),
        (job_body(deployment="Credit-Risk"), "deployment: Value error, must be a deployment name"),
        (job_body(partition="2026-10-31"), "before the first partition 2026-11-01 of deployment"),
        (job_body(partition=None, start_date="2026-11-05", end_date="2026-11-01"), "is after"),
        (job_body(partition=None, start_date="2026-01-01", end_date="2026-12-31"), "longer than"),
        (job_body(priority="asap"), "priority"),
        (job_body(unexpected=1), "unexpected"),
        (job_body(partition="not-a-date"), "partition"),
    ],
)
def test_invalid_requests_get_precise_problems(
    service: Service, body: dict[str, Any], detail: str
) -> None:
    status, problem = service.call("POST", "/api/v1/batch/inference", body)
    assert status == 422, problem
    assert detail in problem["detail"]
    assert problem["title"] == "Invalid request"


def test_an_idempotency_key_makes_a_retry_return_the_same_job(service: Service) -> None:
    key = uuid.uuid4().hex
    first = service.call("POST", "/api/v1/batch/inference", job_body(), Idempotency_Key=key)
    again = service.call("POST", "/api/v1/batch/inference", job_body(), Idempotency_Key=key)
    assert (first[0], again[0]) == (202, 200)
    assert first[1]["job_id"] == again[1]["job_id"]
    status, problem = service.call(
        "POST", "/api/v1/batch/inference", job_body(partition="2026-11-03"), Idempotency_Key=key
    )
    assert status == 409 and key in problem["detail"]


def test_cancel_is_idempotent_and_a_finished_job_cannot_be_cancelled(service: Service) -> None:
    _, job = service.call("POST", "/api/v1/batch/inference", job_body())
    status, cancelled = service.call("POST", f"/api/v1/batch/inference/{job['job_id']}/cancel")
    assert status == 200 and cancelled["status"] == "canceled"
    status, again = service.call("POST", f"/api/v1/batch/inference/{job['job_id']}/cancel")
    assert status == 200 and again["status"] == "canceled"
    _, done = service.call("POST", "/api/v1/batch/inference", job_body())
    service.store.update_status(done["job_id"], "succeeded")
    status, problem = service.call("POST", f"/api/v1/batch/inference/{done['job_id']}/cancel")
    assert status == 409 and "succeeded" in problem["detail"]


def test_with_the_broker_down_requests_are_kept_and_published_after_restart(
    service: Service,
) -> None:
    service.broker.stop()
    try:
        accepted = [service.call("POST", "/api/v1/batch/inference", job_body()) for _ in range(3)]
        assert [status for status, _ in accepted] == [202, 202, 202]
        ids = {job["job_id"] for _, job in accepted}
        time.sleep(2)  # the relay tries and fails meanwhile
        assert ids <= {row.message_key for row in service.store.pending()}
    finally:
        service.broker.start()
    _wait_published(service, ids, timeout=60)


def test_200_concurrent_submissions_are_each_accepted_once(service: Service) -> None:
    keys = [uuid.uuid4().hex for _ in range(200)]
    latencies: list[float] = []
    lock = threading.Lock()

    def submit(key: str) -> tuple[int, str]:
        started = time.perf_counter()
        status, job = service.call(
            "POST", "/api/v1/batch/inference", job_body(), Idempotency_Key=key
        )
        with lock:
            latencies.append(time.perf_counter() - started)
        return status, job["job_id"]

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=32) as pool:
        results = list(pool.map(submit, keys + keys))  # every submission sent twice
    seconds = time.perf_counter() - started
    statuses = [status for status, _ in results]
    assert statuses.count(202) == 200 and statuses.count(200) == 200
    by_key = {}
    for key, (_, job_id) in zip(keys + keys, results, strict=True):
        assert by_key.setdefault(key, job_id) == job_id
    assert len(set(by_key.values())) == 200
    p99 = statistics.quantiles(latencies, n=100)[98]
    print(
        f"\nload: {len(results)} requests in {seconds:.2f} s = {len(results) / seconds:.0f} "
        f"req/s; p50 {statistics.median(latencies) * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms"
    )
    _wait_published(service, set(by_key.values()), timeout=60)
