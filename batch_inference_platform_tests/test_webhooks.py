"""The webhook receiver served by a real uvicorn on loopback: what it accepts, what it refuses,
and that the inbox holds each accepted delivery exactly once."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from batch_inference_platform.api.app import create_app
from batch_inference_platform.lib.inbox.signatures import sign_mlflow
from batch_inference_platform.lib.inbox.store import WebhookInbox

from .servers import postgres_database, served

MLFLOW_SECRET = "mlflow-test-secret"
DATABRICKS_SECRET = "databricks-test-secret"
ALIAS_SET = {
    "entity": "model_version_alias",
    "action": "created",
    "timestamp": 1795880000000,
    "data": {"name": "credit_risk_default", "alias": "champion", "version": "2"},
}


@dataclass
class Receiver:
    url: str
    inbox: WebhookInbox

    def post(
        self, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, dict[str, object]]:
        request = urllib.request.Request(
            self.url + path, data=body, headers={"content-type": "application/json", **headers}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def mlflow(
        self,
        payload: dict[str, object] | bytes,
        *,
        delivery_id: str | None = None,
        timestamp: int | None = None,
        secret: str = MLFLOW_SECRET,
        signed_body: bytes | None = None,
    ) -> tuple[int, dict[str, object]]:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        delivery = delivery_id or str(uuid.uuid4())
        stamp = str(timestamp if timestamp is not None else int(time.time()))
        signature = sign_mlflow(secret, delivery, stamp, signed_body or body)
        return self.post(
            "/api/v1/webhooks/mlflow",
            body,
            {
                "X-MLflow-Delivery-Id": delivery,
                "X-MLflow-Timestamp": stamp,
                "X-MLflow-Signature": signature,
            },
        )


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def receiver(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Receiver]:
    """The receiver with its inbox in sqlite (local) and in PostgreSQL (production)."""
    with ExitStack() as stack:
        if request.param == "postgresql":
            inbox_url = stack.enter_context(postgres_database())
        else:
            inbox_url = f"sqlite:///{tmp_path_factory.mktemp('inbox') / 'inbox.db'}"
        with pytest.MonkeyPatch.context() as env:
            env.setenv("MLFLOW_WEBHOOK_SECRET", MLFLOW_SECRET)
            env.setenv("DATABRICKS_WEBHOOK_SECRET", DATABRICKS_SECRET)
            app = create_app(inbox_url)
        url = stack.enter_context(served(app))
        inbox = WebhookInbox(inbox_url)
        yield Receiver(url, inbox)
        inbox.engine.dispose()


def _entries(receiver: Receiver) -> int:
    return len(receiver.inbox.read_after(0))


def test_a_signed_alias_event_lands_in_the_inbox_once(receiver: Receiver) -> None:
    before = _entries(receiver)
    delivery = str(uuid.uuid4())
    status, answer = receiver.mlflow(ALIAS_SET, delivery_id=delivery)
    assert (status, answer["status"]) == (202, "accepted")
    # MLflow retries with the same delivery id: acknowledged, not stored again.
    status, answer = receiver.mlflow(ALIAS_SET, delivery_id=delivery)
    assert (status, answer["status"]) == (202, "duplicate")
    events = receiver.inbox.read_after(0)
    assert len(events) == before + 1
    assert events[-1].delivery_id == delivery
    assert events[-1].event == "model_version_alias.created"
    assert events[-1].payload == ALIAS_SET
    assert receiver.inbox.read_after(events[-1].id) == []


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("wrong secret", 401),
        ("tampered body", 401),
        ("stale", 401),
        ("future", 401),
        ("malformed json", 400),
        ("not an object", 400),
        ("missing data", 400),
    ],
)
def test_untrusted_or_invalid_deliveries_are_refused(
    receiver: Receiver, case: str, expected: int
) -> None:
    before = _entries(receiver)
    now = int(time.time())
    if case == "wrong secret":
        status, answer = receiver.mlflow(ALIAS_SET, secret="not-the-secret")
    elif case == "tampered body":
        tampered = {**ALIAS_SET, "data": {**ALIAS_SET["data"], "version": "666"}}  # type: ignore[dict-item]
        status, answer = receiver.mlflow(tampered, signed_body=json.dumps(ALIAS_SET).encode())
    elif case == "stale":
        status, answer = receiver.mlflow(ALIAS_SET, timestamp=now - 301)
    elif case == "future":
        status, answer = receiver.mlflow(ALIAS_SET, timestamp=now + 120)
    elif case == "malformed json":
        status, answer = receiver.mlflow(b"{not json")
    elif case == "not an object":
        status, answer = receiver.mlflow(b"[1, 2]")
    else:
        status, answer = receiver.mlflow({"entity": "model_version", "action": "created"})
    assert status == expected, answer
    assert answer["status"] == expected and answer["detail"]
    assert _entries(receiver) == before


def test_missing_signature_headers_are_refused(receiver: Receiver) -> None:
    before = _entries(receiver)
    status, answer = receiver.post("/api/v1/webhooks/mlflow", json.dumps(ALIAS_SET).encode(), {})
    assert status == 401 and "missing" in str(answer["detail"])
    assert _entries(receiver) == before


def test_a_body_over_one_mib_is_refused(receiver: Receiver) -> None:
    """Refused from its Content-Length, before it is read: the client sees 413, or - if it was
    still sending when the server answered and closed - a broken connection."""
    before = _entries(receiver)
    try:
        status, _ = receiver.mlflow(b"{" + b" " * (1 << 20) + b"}")
    except (urllib.error.URLError, ConnectionError) as error:
        reason = getattr(error, "reason", error)
        assert isinstance(reason, ConnectionError), error
    else:
        assert status == 413
    assert _entries(receiver) == before


def test_events_the_platform_ignores_are_acknowledged_not_stored(receiver: Receiver) -> None:
    before = _entries(receiver)
    created = {"entity": "registered_model", "action": "created", "timestamp": 1, "data": {}}
    status, answer = receiver.mlflow(created)
    assert (status, answer["status"]) == (200, "ignored")
    assert _entries(receiver) == before


def test_databricks_deliveries_are_verified_and_deduplicated(receiver: Receiver) -> None:
    before = _entries(receiver)
    body = json.dumps(
        {
            "event": "MODEL_VERSION_CREATED",
            "event_timestamp": int(time.time() * 1000),
            "model_name": "credit_risk_default",
            "version": "3",
        }
    ).encode()
    good = hmac.new(DATABRICKS_SECRET.encode(), body, hashlib.sha256).hexdigest()
    path = "/api/v1/webhooks/databricks"
    assert receiver.post(path, body, {"X-Databricks-Signature": "0" * 64})[0] == 401
    assert receiver.post(path, body, {})[0] == 401
    status, answer = receiver.post(path, body, {"X-Databricks-Signature": good})
    assert (status, answer["status"]) == (202, "accepted")
    status, answer = receiver.post(path, body, {"X-Databricks-Signature": good})
    assert (status, answer["status"]) == (202, "duplicate")
    events = receiver.inbox.read_after(0)
    assert len(events) == before + 1
    assert (events[-1].source, events[-1].event) == ("databricks", "MODEL_VERSION_CREATED")


def test_an_unconfigured_receiver_refuses_everything(tmp_path: Path) -> None:
    """No secret in the environment: nothing can be authenticated, so nothing is accepted."""
    inbox_url = f"sqlite:///{tmp_path / 'inbox.db'}"
    with pytest.MonkeyPatch.context() as env:
        env.delenv("MLFLOW_WEBHOOK_SECRET", raising=False)
        env.delenv("DATABRICKS_WEBHOOK_SECRET", raising=False)
        app = create_app(inbox_url)
    with served(app) as url:
        unconfigured = Receiver(url, WebhookInbox(inbox_url))
        status, answer = unconfigured.mlflow(ALIAS_SET)
        assert status == 503 and "MLFLOW_WEBHOOK_SECRET" in str(answer["detail"])
        body = json.dumps({"event": "MODEL_VERSION_CREATED"}).encode()
        status, _ = unconfigured.post("/api/v1/webhooks/databricks", body, {})
        assert status == 503
        assert unconfigured.inbox.read_after(0) == []


def test_concurrent_retries_store_each_delivery_once(receiver: Receiver) -> None:
    """MLflow retries while the first attempt is still in flight: 10 deliveries each sent 4
    times at once are stored exactly once each; every attempt gets a 2xx."""
    before = _entries(receiver)
    deliveries = [str(uuid.uuid4()) for _ in range(10)]
    attempts = [d for d in deliveries for _ in range(4)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(lambda d: receiver.mlflow(ALIAS_SET, delivery_id=d)[0], attempts))
    assert set(statuses) <= {200, 202}
    stored = [e.delivery_id for e in receiver.inbox.read_after(0)]
    assert _entries(receiver) == before + 10
    assert sorted(d for d in stored if d in deliveries) == sorted(deliveries)


def test_each_delivery_leaves_one_log_line_without_the_secret(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    """One JSON line per delivery: time, receiver, delivery id, event and outcome - accepted,
    duplicate, bad signature - and never the secret or the signature."""
    from batch_inference_platform.api.webhooks import DELIVERY_LOG

    delivery = str(uuid.uuid4())
    with caplog.at_level("INFO", logger=DELIVERY_LOG):
        assert receiver.mlflow(ALIAS_SET, delivery_id=delivery)[0] == 202
        assert receiver.mlflow(ALIAS_SET, delivery_id=delivery)[0] == 202
        assert receiver.mlflow(ALIAS_SET, secret="wrong-secret")[0] == 401
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == DELIVERY_LOG]
    assert [(line["delivery_id"] == delivery, line["outcome"]) for line in lines] == [
        (True, "accepted"),
        (True, "duplicate"),
        (False, "bad_signature"),
    ]
    for line in lines:
        assert line["receiver"] == "mlflow" and line["time"].endswith("+00:00")
        assert line["event"] in ("model_version_alias.created", None)
    assert "does not match" in lines[2]["reason"]
    assert MLFLOW_SECRET not in caplog.text and "v1," not in caplog.text
