"""Hostile input against the HTTP service, served by a real uvicorn on loopback (the way
``batch-inference api`` serves it: ``server_config``) with the job store and the webhook inbox
in PostgreSQL: every class of bad request gets a 4xx (or 503 for a store that is down) as
``application/problem+json`` naming what is wrong, with security headers, and never a
traceback in the server's log."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import http.client
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
import redis
from fastapi import FastAPI

from batch_inference_platform.api.app import create_app, server_config
from batch_inference_platform.api.jobs import JobsService
from batch_inference_platform.config import load_settings
from batch_inference_platform.lib.deployments.folder import read_deployments
from batch_inference_platform.lib.inbox.job_store import JobStore
from batch_inference_platform.lib.inbox.signatures import sign_mlflow
from batch_inference_platform.lib.inbox.store import WebhookInbox
from batch_inference_platform.lib.realtime.cache import RecommendationCache
from batch_inference_platform.lib.tenants import hash_api_key, load_tenants

from .servers import free_port, postgres_database

KEY = "acme-" + uuid.uuid4().hex
TABLE = "validated/credit_risk"
MLFLOW_SECRET = "mlflow-hardening-secret"
DATABRICKS_SECRET = "databricks-hardening-secret"
LIMIT = 1 << 20
PROBLEM = "application/problem+json"
JOBS = "/api/v1/batch/inference"
SECURITY = {
    "x-content-type-options": "nosniff",
    "cache-control": "no-store",
    "referrer-policy": "no-referrer",
}


# --------------------------------------------------------------------------- harness


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    def is_problem(self, status: int, *words: str) -> None:
        """A problem document with ``status`` whose detail names each of ``words``."""
        assert self.status == status, (self.status, self.body[:500])
        assert self.headers["content-type"] == PROBLEM, self.headers
        document = self.json
        assert document["status"] == status and document["title"], document
        for word in words:
            assert word in document["detail"], (word, document)
        for name, value in SECURITY.items():
            assert self.headers.get(name) == value, (name, self.headers)
        assert "server" not in self.headers


@dataclass
class Service:
    url: str
    store: JobStore
    inbox: WebhookInbox

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 80

    def call(
        self,
        method: str,
        path: str,
        body: bytes | dict[str, Any] | None = None,
        headers: dict[str, Any] | None = None,
        key: str | None = KEY,
    ) -> Answer:
        return call(self.port, method, path, body, headers, key)

    def submit(self, headers: dict[str, str] | None = None, /, **fields: Any) -> Answer:
        return self.call("POST", JOBS, job_body(**fields), headers)

    def jobs(self) -> int:
        return len(self.store.list("acme", limit=1000))

    def mlflow(
        self, body: bytes, *, delivery_id: str | None = None, timestamp: int | None = None
    ) -> Answer:
        delivery = delivery_id or str(uuid.uuid4())
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        signature = sign_mlflow(MLFLOW_SECRET, delivery, stamp, body)
        headers = {
            "X-MLflow-Delivery-Id": delivery,
            "X-MLflow-Timestamp": stamp,
            "X-MLflow-Signature": signature,
        }
        return self.call("POST", "/api/v1/webhooks/mlflow", body, headers, key=None)

    def databricks(self, body: bytes) -> Answer:
        signature = hmac.new(DATABRICKS_SECRET.encode(), body, hashlib.sha256).hexdigest()
        headers = {"X-Databricks-Signature": signature}
        return self.call("POST", "/api/v1/webhooks/databricks", body, headers, key=None)


def call(
    port: int,
    method: str,
    path: str,
    body: bytes | dict[str, Any] | None = None,
    headers: dict[str, Any] | None = None,
    key: str | None = None,
) -> Answer:
    """One request on its own connection; header values may be bytes (sent as they are)."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    sent = {"Content-Type": "application/json", **(headers or {})}
    if key:
        sent["Authorization"] = f"Bearer {key}"
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, body=data, headers=sent)
        response = connection.getresponse()
        answer = response.read()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, answer)
    finally:
        connection.close()


def job_body(**overrides: Any) -> dict[str, Any]:
    body = {
        "deployment": "credit_risk",
        "model": "credit_risk_default@champion",
        "feature_table": TABLE,
        "partition": "2026-11-02",
        **overrides,
    }
    return {k: v for k, v in body.items() if v is not None}


def write_tenants(path: Path) -> Path:
    path.write_text(
        f"""tenants:
  - id: acme
    api-key-sha256: {hash_api_key(KEY)}
    default-priority: normal
    max-concurrent-runs: 1
    allowed-deployments: [credit_risk]
    allowed-input-tables: [{TABLE}]
    output-root: tenants/acme
    read-recommendations: true
"""
    )
    return path


@contextmanager
def hardened(app: FastAPI) -> Iterator[str]:
    """``app`` under uvicorn as ``batch-inference api`` serves it, logging to the root logger
    (no uvicorn logging config), on a free loopback port."""
    import uvicorn

    port = free_port()
    config = server_config(app, "127.0.0.1", port, log_config=None, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def tracebacks(self) -> list[str]:
        return [
            f"{r.name}: {r.getMessage()}"
            for r in self.records
            if r.exc_info or r.exc_text or "Traceback" in r.getMessage()
        ]


@pytest.fixture
def logs() -> Iterator[_Records]:
    """What the server logs during a test (uvicorn's error logger and ours, wherever other
    tests' logging configs left propagation)."""
    handler = _Records()
    loggers = [logging.getLogger(), logging.getLogger("uvicorn.error")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield handler
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


def no_tracebacks(logs: _Records) -> None:
    """Nothing logged a traceback. uvicorn logs an unhandled error just after the response is
    sent, so give it a moment first."""
    time.sleep(0.03)
    assert logs.tracebacks() == []


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The hardened service in environment prod: job store and inbox in one PostgreSQL
    database; the shipped deployments, partitions from their start to today + 7 days."""
    root = tmp_path_factory.mktemp("hardening")
    tenants = load_tenants(write_tenants(root / "tenants.yml"), str(root / "lake"))
    settings = load_settings()
    with postgres_database() as url, pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_WEBHOOK_SECRET", MLFLOW_SECRET)
        env.setenv("DATABRICKS_WEBHOOK_SECRET", DATABRICKS_SECRET)
        store = JobStore(url, settings.application.kafka.as_config().topics)
        app = create_app(
            url,
            jobs=JobsService(store, tenants, max_days=31, days_ahead=7),
            environment="prod",
            max_body_bytes=LIMIT,
        )

        @app.get("/api/v1/test-only/boom")
        def boom() -> None:
            raise RuntimeError("cannot reach db-internal.example:5432 as admin")

        inbox = WebhookInbox(url)
        with hardened(app) as base:
            yield Service(base, store, inbox)
        inbox.engine.dispose()


# --------------------------------------------------------------------------- body limit


def _raw(port: int, head: bytes, chunks: tuple[bytes, ...] | list[bytes] = ()) -> Answer:
    """Send ``head`` then ``chunks`` on a raw socket, then read until the server closes (or
    the response is complete); what a misbehaving client does."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(head)
        for chunk in chunks:
            raw.sendall(chunk)
            time.sleep(0.05)
        response = http.client.HTTPResponse(raw)
        response.begin()
        body = response.read()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, body)


@pytest.mark.parametrize(
    "path",
    [JOBS, f"{JOBS}/some-job/cancel", "/api/v1/webhooks/mlflow", "/api/v1/webhooks/databricks"],
)
def test_a_body_declared_over_the_limit_gets_413_before_it_is_sent(
    service: Service, logs: _Records, path: str
) -> None:
    """100 MB declared, not one byte of it sent (and no credentials): 413 at once, not 401
    after reading it."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {100 << 20}\r\n\r\n"
    ).encode()
    started = time.monotonic()
    answer = _raw(service.port, head)
    answer.is_problem(413, str(LIMIT))
    assert time.monotonic() - started < 5
    no_tracebacks(logs)


@pytest.mark.parametrize("path", [JOBS, "/api/v1/webhooks/mlflow"])
def test_a_chunked_body_gets_413_as_soon_as_it_passes_the_limit(
    service: Service, logs: _Records, path: str
) -> None:
    """No Content-Length: counted while it streams; refused after 1.2 MiB of an endless
    body, without waiting for the end."""
    before = service.jobs()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {KEY}\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    quarter, extra = b" " * (LIMIT // 4), b" " * 16
    chunks = [f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in [quarter] * 4 + [extra]]
    answer = _raw(service.port, head, chunks)  # no terminating chunk: it never ends
    answer.is_problem(413, str(LIMIT))
    assert service.jobs() == before
    no_tracebacks(logs)


# --------------------------------------------------------------------------- strings


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("output_table", "scores/" + "x" * 110_000, ["output_table", "at most 200"]),
        ("feature_table", "v" * 5000, ["feature_table", "at most 200"]),
        ("model", "m" * 300 + "@champion", ["model", "at most 200"]),
        ("tenant", "t" * 101, ["tenant", "at most 100"]),
        ("output_table", "scores/x\n", ["output_table", "table name", r"'scores/x\n'"]),
        ("feature_table", TABLE + "\n", ["feature_table", "table name"]),
        ("model", "credit_risk_default@champion\n", ["model", "name@alias"]),
        ("tenant", "acme\n", ["tenant", "tenant id"]),
        ("deployment", "credit_risk\n", ["deployment", "deployment name"]),
        ("deployment", "d" * 64, ["deployment", "at most 63"]),
        ("deployment", "credit_r\u0131sk", ["deployment", "deployment name"]),
        ("output_table", "scores/\x00x", ["output_table", r"\x00"]),
        ("output_table", "scores/é", ["output_table", "table name"]),
        ("model", "credit_risk_default@\u0663", ["model", "name@alias"]),
    ],
)
def test_long_or_ill_formed_strings_are_refused_naming_the_field(
    service: Service, logs: _Records, field: str, value: str, words: list[str]
) -> None:
    """Lengths and whole-string character sets: a trailing newline, NUL or non-ASCII
    character never passes, and nothing is stored."""
    before = service.jobs()
    service.submit(**{field: value}).is_problem(422, *words)
    assert service.jobs() == before
    no_tracebacks(logs)


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"partition": "0001-01-01"}, ["before the first partition", "source.partition.start"]),
        ({"partition": "9999-12-31"}, ["after the last day", "today + 7 days"]),
        ({"partition": "day-before-start"}, ["is before the first partition"]),
        ({"partition": 1795910400}, ["partition", "YYYY-MM-DD"]),
        ({"partition": "2026-11-02T00:00:00"}, ["partition", "YYYY-MM-DD"]),
        ({"partition": "2026-11-0\u0662"}, ["partition", "YYYY-MM-DD"]),
    ],
)
def test_partitions_outside_the_use_case_are_refused_naming_the_bound(
    service: Service, logs: _Records, fields: dict[str, Any], words: list[str]
) -> None:
    settings = load_settings()
    app = settings.application
    declared = read_deployments(settings.project_root, app.deployments_dir, lake_root=app.lake.root)
    start = declared["credit_risk"].partitioning.start
    assert start is not None
    if fields["partition"] == "day-before-start":
        fields = {"partition": (start.date() - dt.timedelta(days=1)).isoformat()}
        words = [
            *words,
            f"{fields['partition']} is before the first partition {start.date()} of deployment "
            "'credit_risk'",
        ]
    before = service.jobs()
    service.submit(**fields).is_problem(422, *words)
    assert service.jobs() == before
    no_tracebacks(logs)


def test_the_last_allowed_day_is_today_plus_the_configured_days(
    service: Service, logs: _Records
) -> None:
    latest = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=7)
    assert service.submit(partition=latest.isoformat()).status == 202
    after = (latest + dt.timedelta(days=1)).isoformat()
    service.submit(partition=after).is_problem(422, f"{after} is after", str(latest))
    no_tracebacks(logs)


@pytest.mark.parametrize(
    ("key", "words"),
    [
        ("", ["Idempotency-Key is empty"]),
        ("k" * 201, ["1-200 visible ASCII"]),
        ("clé", ["1-200 visible ASCII"]),
        ("two words", ["1-200 visible ASCII"]),
    ],
)
def test_an_empty_or_ill_formed_idempotency_key_is_refused(
    service: Service, logs: _Records, key: str, words: list[str]
) -> None:
    before = service.jobs()
    service.submit({"Idempotency-Key": key}).is_problem(400, *words)
    assert service.jobs() == before
    no_tracebacks(logs)


@pytest.mark.parametrize(
    ("method", "path", "words"),
    [
        ("GET", f"{JOBS}/{quote(chr(0))}", ["job id", r"\x00"]),
        ("GET", f"{JOBS}/abc{quote(chr(0))}def", ["job id", r"\x00"]),
        ("GET", f"{JOBS}/{quote(chr(10))}", ["job id", r"\n"]),
        ("GET", f"{JOBS}/{'j' * 201}", ["job id", "1-200"]),
        ("POST", f"{JOBS}/{quote(chr(0))}/cancel", ["job id", r"\x00"]),
        ("GET", f"{JOBS}?status={quote(chr(0))}", ["status", "accepted"]),
        ("GET", f"{JOBS}?status=queued{quote(chr(10))}", ["status", "accepted"]),
        ("GET", f"{JOBS}?status=anything", ["status", "accepted"]),
    ],
)
def test_control_characters_in_ids_and_filters_get_400(
    service: Service, logs: _Records, method: str, path: str, words: list[str]
) -> None:
    """On PostgreSQL a NUL reached the driver and became a 500; now it is refused first."""
    service.call(method, path).is_problem(400, *words)
    no_tracebacks(logs)


# --------------------------------------------------------------------------- JSON


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    ("kind", "words"),
    [("deep", ["nested deeper than 32"]), ("digits", ["4300 digits"]), ("nan", ["NaN"])],
)
def test_hostile_json_is_refused_with_400_everywhere(
    service: Service, logs: _Records, kind: str, words: list[str]
) -> None:
    """100k levels of nesting (RecursionError in Python's json), a 4,300-digit integer
    (ValueError) and NaN: signed webhook deliveries and client requests alike."""
    value = {"deep": _nested(100_000), "digits": "9" * 4300, "nan": "NaN"}[kind]
    before_jobs, before_inbox = service.jobs(), len(service.inbox.read_after(0))
    mlflow = (
        '{"entity": "model_version", "action": "created", "timestamp": 1, '
        f'"data": {{"name": "m", "x": {value}}}}}'
    ).encode()
    service.mlflow(mlflow).is_problem(400, *words)
    databricks = (
        '{"event": "MODEL_VERSION_CREATED", '
        f'"event_timestamp": {int(time.time() * 1000)}, "x": {value}}}'
    ).encode()
    service.databricks(databricks).is_problem(400, *words)
    client = json.dumps(job_body())[:-1] + f', "priority": {value}}}'
    service.call("POST", JOBS, client.encode()).is_problem(400, *words)
    assert service.jobs() == before_jobs
    assert len(service.inbox.read_after(0)) == before_inbox
    no_tracebacks(logs)


# --------------------------------------------------------------------------- webhooks


@pytest.mark.parametrize(
    ("path", "headers", "words"),
    [
        ("databricks", {"X-Databricks-Signature": "é" * 64}, ["64 hex digits"]),
        ("databricks", {"X-Databricks-Signature": "ab" * 32 + "\u00a0"}, ["64 hex digits"]),
        ("mlflow", {"X-MLflow-Signature": "v1," + "é" * 43 + "="}, ["X-MLflow-Signature"]),
        ("mlflow", {"X-MLflow-Timestamp": "\u0661\u0667\u0660\u0660".encode()}, ["unix seconds"]),
        ("mlflow", {"X-MLflow-Timestamp": "1_700_000_000"}, ["unix seconds"]),
    ],
)
def test_non_ascii_signature_headers_get_401(
    service: Service,
    logs: _Records,
    path: str,
    headers: dict[str, Any],
    words: list[str],
) -> None:
    body = json.dumps({"event": "MODEL_VERSION_CREATED"}).encode()
    sent = {
        "X-MLflow-Delivery-Id": str(uuid.uuid4()),
        "X-MLflow-Timestamp": str(int(time.time())),
        "X-MLflow-Signature": "v1," + "A" * 43 + "=",
        **headers,
    }
    service.call("POST", f"/api/v1/webhooks/{path}", body, sent, key=None).is_problem(401, *words)
    no_tracebacks(logs)


def test_a_signed_delivery_id_too_long_for_the_inbox_gets_400(
    service: Service, logs: _Records
) -> None:
    """Correctly signed, but 201 characters: the PostgreSQL column holds 200 (it was a 500)."""
    before = len(service.inbox.read_after(0))
    body = json.dumps(
        {"entity": "model_version", "action": "created", "timestamp": 1, "data": {}}
    ).encode()
    service.mlflow(body, delivery_id="d" * 201).is_problem(400, "X-MLflow-Delivery-Id", "1-200")
    service.mlflow(body, delivery_id="d\u00e9").is_problem(400, "X-MLflow-Delivery-Id")
    assert len(service.inbox.read_after(0)) == before
    no_tracebacks(logs)


@pytest.mark.parametrize(
    ("event_timestamp", "status", "words"),
    [
        (0, 401, ["event_timestamp", "limit 300 s"]),
        ("now-301s", 401, ["event_timestamp", "limit 300 s"]),
        ("now+120s", 401, ["event_timestamp", "in the future"]),
        ("1795880000000", 401, ["event_timestamp", "unix milliseconds"]),
        (None, 400, ["missing field: event_timestamp"]),
    ],
)
def test_a_stale_databricks_delivery_is_refused_by_its_event_timestamp(
    service: Service, logs: _Records, event_timestamp: object, status: int, words: list[str]
) -> None:
    """The Databricks signature covers only the body, so a signed delivery from 1970 never
    seen before was accepted; its own event_timestamp (ms) now has MLflow's 5-minute window."""
    before = len(service.inbox.read_after(0))
    now_ms = int(time.time() * 1000)
    stamp = {"now-301s": now_ms - 301_000, "now+120s": now_ms + 120_000}.get(
        str(event_timestamp), event_timestamp
    )
    payload: dict[str, Any] = {"event": "MODEL_VERSION_CREATED", "model_name": "m", "version": "1"}
    if stamp is not None:
        payload["event_timestamp"] = stamp
    service.databricks(json.dumps(payload).encode()).is_problem(status, *words)
    assert len(service.inbox.read_after(0)) == before
    fresh = {**payload, "event_timestamp": now_ms - 60_000}
    assert service.databricks(json.dumps(fresh).encode()).status == 202
    no_tracebacks(logs)


# --------------------------------------------------------------------------- stores down


@pytest.fixture(scope="module")
def stores_down(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The service with its job store on a PostgreSQL port nothing listens on, its inbox in a
    PostgreSQL database dropped after start, and Redis unreachable."""
    root = tmp_path_factory.mktemp("stores_down")
    tenants = load_tenants(write_tenants(root / "tenants.yml"), str(root / "lake"))
    settings = load_settings()
    dead_port = free_port()
    store = JobStore(
        f"postgresql+psycopg://postgres@127.0.0.1:{dead_port}/test",
        settings.application.kafka.as_config().topics,
    )
    cache = RecommendationCache(
        redis.Redis(host="127.0.0.1", port=dead_port, socket_connect_timeout=2),
        "bip",
        dt.timedelta(days=1),
    )
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_WEBHOOK_SECRET", MLFLOW_SECRET)
        env.setenv("DATABRICKS_WEBHOOK_SECRET", DATABRICKS_SECRET)
        with postgres_database() as inbox_url:
            app = create_app(
                inbox_url,
                jobs=JobsService(store, tenants, max_days=31),
                recommendations=cache,
                environment="prod",
            )
            inbox = WebhookInbox(inbox_url)
        inbox.engine.dispose()
    with hardened(app) as base:
        yield Service(base, store, inbox)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", JOBS, job_body()),
        ("GET", f"{JOBS}/{uuid.uuid4()}", None),
        ("GET", JOBS, None),
        ("POST", f"{JOBS}/{uuid.uuid4()}/cancel", None),
        ("GET", "/api/v1/customers/42/recommendation", None),
    ],
)
def test_a_store_that_is_down_answers_503_without_naming_it(
    stores_down: Service,
    logs: _Records,
    method: str,
    path: str,
    body: dict[str, Any] | None,
) -> None:
    answer = stores_down.call(method, path, body)
    answer.is_problem(503, "unavailable")
    assert answer.headers["retry-after"]
    text = answer.body.decode()
    assert "127.0.0.1" not in text and str(stores_down_port(stores_down)) not in text
    assert any("unavailable" in r.getMessage() for r in logs.records)  # logged server-side
    no_tracebacks(logs)


def stores_down_port(service: Service) -> int:
    return service.store.engine.url.port or 0


def test_bad_ids_are_refused_before_the_store_is_asked(
    stores_down: Service, logs: _Records
) -> None:
    """With the store down, a NUL id still gets 400, not 503: nothing reached the store."""
    stores_down.call("GET", f"{JOBS}/{quote(chr(0))}").is_problem(400, "job id")
    stores_down.call("GET", f"{JOBS}?status={quote(chr(0))}").is_problem(400, "status")
    stores_down.submit({"Idempotency-Key": ""}).is_problem(400, "Idempotency-Key")
    no_tracebacks(logs)


def test_an_inbox_that_is_down_answers_503_so_the_sender_retries(
    stores_down: Service, logs: _Records
) -> None:
    body = json.dumps(
        {"entity": "model_version_alias", "action": "created", "timestamp": 1, "data": {}}
    ).encode()
    answer = stores_down.mlflow(body)
    answer.is_problem(503, "inbox")
    assert "bip_" not in answer.body.decode()  # the database's name stays in the log
    no_tracebacks(logs)


# --------------------------------------------------------------------------- the service


def test_no_redirect_is_built_from_the_host_header(service: Service, logs: _Records) -> None:
    for method in ("POST", "GET"):
        answer = service.call(method, JOBS + "/", job_body(), {"Host": "evil.example"})
        answer.is_problem(404)
        assert "location" not in answer.headers
        assert b"evil.example" not in answer.body
    no_tracebacks(logs)


def test_every_answer_carries_security_headers_and_no_server_banner(
    service: Service, logs: _Records
) -> None:
    accepted = service.submit()
    assert accepted.status == 202
    for answer in (accepted, service.call("GET", JOBS)):
        for name, value in SECURITY.items():
            assert answer.headers[name] == value
        assert "default-src 'none'" in answer.headers["content-security-policy"]
        assert "server" not in answer.headers
    service.call("GET", JOBS, key=None).is_problem(401)
    service.call("GET", "/nowhere").is_problem(404)
    service.call("DELETE", JOBS).is_problem(405)
    no_tracebacks(logs)


def test_an_unexpected_error_is_a_problem_500_that_names_nothing_internal(
    service: Service, logs: _Records
) -> None:
    """The generic handler: problem+json, security headers, no detail; the server logs it."""
    answer = service.call("GET", "/api/v1/test-only/boom")
    answer.is_problem(500)
    assert b"db-internal" not in answer.body and b"RuntimeError" not in answer.body
    deadline = time.monotonic() + 5
    while not logs.tracebacks():  # unexpected errors are logged, with their traceback
        assert time.monotonic() < deadline, "the unexpected error was not logged"
        time.sleep(0.05)
    time.sleep(0.2)  # let the record finish reaching every logger it propagates to


def test_docs_are_served_only_in_environment_local(tmp_path: Path, logs: _Records) -> None:
    inbox_url = f"sqlite:///{tmp_path / 'inbox.db'}"
    with hardened(create_app(inbox_url, environment="prod")) as url:
        port = urlsplit(url).port or 80
        call(port, "GET", "/docs").is_problem(404)
        call(port, "GET", "/redoc").is_problem(404)
        assert call(port, "GET", "/openapi.json").status == 200
    with hardened(create_app(inbox_url, environment="local")) as url:
        page = call(urlsplit(url).port or 80, "GET", "/docs")
        assert page.status == 200 and page.headers["content-type"].startswith("text/html")
        policy = page.headers["content-security-policy"]
        assert "script-src 'unsafe-inline' https://cdn.jsdelivr.net;" in policy
        assert "default-src 'none'" in policy
    no_tracebacks(logs)
