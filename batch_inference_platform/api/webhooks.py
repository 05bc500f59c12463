"""Webhook receivers: MLflow OSS and Databricks registry events into the durable inbox.

Each endpoint authenticates the delivery by its signature before reading it, refuses what it
cannot trust with a precise 4xx, and answers 2xx only after the event is committed to the
inbox. Replays (the same delivery id) and events the platform does not act on are
acknowledged without a new inbox entry, so the sender stops retrying.

Every delivery leaves one JSON line on the ``batch_inference_platform.webhooks`` logger: time,
receiver, delivery id, event, outcome (``accepted``, ``duplicate``, ``ignored``,
``bad_signature``, ``bad_request``, ``too_large``, ``unavailable``, ``not_configured``), HTTP
status and, for a refusal, the reason. Never the secret, the signature or the body.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
import sys
import time
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError

from batch_inference_platform.api.limits import InvalidJson, matches, parse_json, shown
from batch_inference_platform.api.problems import log_reason, problem
from batch_inference_platform.lib.inbox.signatures import (
    SignatureError,
    verify_databricks,
    verify_databricks_timestamp,
    verify_mlflow,
)
from batch_inference_platform.lib.inbox.store import WebhookInbox

logger = logging.getLogger(__name__)
DELIVERY_LOG = "batch_inference_platform.webhooks"
"""The logger of the one-line-per-delivery record."""
delivery_logger = logging.getLogger(DELIVERY_LOG)

MAX_BODY_BYTES = 1 << 20
MLFLOW_EVENTS = {
    "model_version.created",
    "model_version_alias.created",
    "model_version_alias.deleted",
    "model_version_tag.set",
}
"""MLflow OSS events that can change which version serves (``entity.action``)."""
DATABRICKS_EVENTS = {
    "MODEL_VERSION_CREATED",
    "MODEL_VERSION_TRANSITIONED_STAGE",
    "TRANSITION_REQUEST_CREATED",
    "REGISTERED_MODEL_ALIAS_SET",
}
_DELIVERY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,199}")
"""What the inbox's delivery id column holds (MLflow sends a uuid)."""
_EVENT_PART = re.compile(r"[A-Za-z0-9_.-]{1,48}")


def webhook_router(
    inbox: WebhookInbox, *, mlflow_secret: str | None, databricks_secret: str | None
) -> APIRouter:
    """Routes for both registries; a receiver whose secret is not configured refuses all."""
    router = APIRouter(prefix="/api/v1/webhooks")

    @router.post("/mlflow")
    async def mlflow_webhook(request: Request) -> JSONResponse:
        seen = _Delivery("mlflow", request.headers.get("x-mlflow-delivery-id"))
        return seen.logged(await receive_mlflow(request, seen))

    @router.post("/databricks")
    async def databricks_webhook(request: Request) -> JSONResponse:
        seen = _Delivery("databricks", None)
        return seen.logged(await receive_databricks(request, seen))

    async def receive_mlflow(request: Request, seen: _Delivery) -> JSONResponse:
        body = await _bounded_body(request)
        if isinstance(body, JSONResponse):
            return body
        if not mlflow_secret:
            return problem(503, "Receiver not configured", "MLFLOW_WEBHOOK_SECRET is not set")
        headers = request.headers
        delivery_id = headers.get("x-mlflow-delivery-id")
        if delivery_id and not matches(_DELIVERY_ID, delivery_id):
            return problem(
                400,
                "Invalid delivery id",
                f"X-MLflow-Delivery-Id {shown(delivery_id)} must be 1-200 characters of "
                "[A-Za-z0-9._:-]",
            )
        try:
            verify_mlflow(
                mlflow_secret,
                delivery_id=delivery_id,
                timestamp=headers.get("x-mlflow-timestamp"),
                signature=headers.get("x-mlflow-signature"),
                body=body,
                now=time.time(),
            )
        except SignatureError as error:
            return problem(401, "Invalid signature", str(error))
        payload = _json(body)
        if isinstance(payload, JSONResponse):
            return payload
        missing = [k for k in ("entity", "action", "data") if k not in payload]
        if missing or not isinstance(payload.get("data"), dict):
            return problem(
                400, "Invalid payload", f"missing or invalid fields: {missing or ['data']}"
            )
        for key in ("entity", "action"):
            if not isinstance(payload[key], str) or not matches(_EVENT_PART, payload[key]):
                return problem(
                    400, "Invalid payload", f"{key} must be 1-48 characters of [A-Za-z0-9_.-]"
                )
        event = f"{payload['entity']}.{payload['action']}"
        seen.event = event
        assert delivery_id is not None  # verified above
        return _store(inbox, "mlflow", delivery_id, event, payload, MLFLOW_EVENTS)

    async def receive_databricks(request: Request, seen: _Delivery) -> JSONResponse:
        body = await _bounded_body(request)
        if isinstance(body, JSONResponse):
            return body
        if not databricks_secret:
            return problem(503, "Receiver not configured", "DATABRICKS_WEBHOOK_SECRET is not set")
        try:
            verify_databricks(
                databricks_secret,
                signature=request.headers.get("x-databricks-signature"),
                body=body,
            )
        except SignatureError as error:
            return problem(401, "Invalid signature", str(error))
        payload = _json(body)
        if isinstance(payload, JSONResponse):
            return payload
        event = payload.get("event")
        if not isinstance(event, str) or not matches(_EVENT_PART, event):
            return problem(
                400, "Invalid payload", "event must be 1-48 characters of [A-Za-z0-9_.-]"
            )
        seen.event = event
        # The signature covers no timestamp: the signed payload's own event time must be fresh.
        if "event_timestamp" not in payload:
            return problem(400, "Invalid payload", "missing field: event_timestamp")
        try:
            verify_databricks_timestamp(payload["event_timestamp"], now=time.time())
        except SignatureError as error:
            return problem(401, "Stale delivery", f"event_timestamp: {error}")
        # Databricks sends no delivery id; the signed body's digest identifies a re-send.
        delivery_id = "databricks-" + hashlib.sha256(body).hexdigest()
        seen.delivery_id = delivery_id
        return _store(inbox, "databricks", delivery_id, event, payload, DATABRICKS_EVENTS)

    return router


_OUTCOMES = {
    400: "bad_request",
    401: "bad_signature",
    413: "too_large",
}


@dataclass
class _Delivery:
    """What the receiver knows of one delivery, for its log line."""

    receiver: str
    delivery_id: str | None
    event: str | None = None

    def logged(self, response: JSONResponse) -> JSONResponse:
        """Log the delivery's one line and pass ``response`` on."""
        answer = json.loads(bytes(response.body)) if response.body else {}
        status = response.status_code
        if status in (200, 202):
            outcome = str(answer.get("status", "accepted"))
        elif status == 503:
            outcome = "not_configured" if "not configured" in str(answer) else "unavailable"
        else:
            outcome = _OUTCOMES.get(status, f"refused_{status}")
        record: dict[str, Any] = {
            "time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
            "receiver": self.receiver,
            "delivery_id": shown_id(self.delivery_id),
            "event": self.event,
            "outcome": outcome,
            "status": status,
        }
        if status >= 400:
            record["reason"] = str(answer.get("detail", answer.get("title", "")))[:300]
        level = logging.INFO if status < 400 else logging.WARNING
        delivery_logger.log(level, json.dumps(record, sort_keys=False))
        return response


def shown_id(delivery_id: str | None) -> str | None:
    """A delivery id as logged: whole when it has the expected shape, else shortened."""
    if delivery_id is None or matches(_DELIVERY_ID, delivery_id):
        return delivery_id
    return shown(delivery_id)


def configure_delivery_log() -> None:
    """Send the delivery lines to stderr (``batch-inference api``), once."""
    if not delivery_logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        delivery_logger.addHandler(handler)
        delivery_logger.setLevel(logging.INFO)
        delivery_logger.propagate = False


def _store(
    inbox: WebhookInbox,
    source: str,
    delivery_id: str,
    event: str,
    payload: dict[str, Any],
    watched: set[str],
) -> JSONResponse:
    if event not in watched:
        return JSONResponse({"status": "ignored", "event": event}, status_code=200)
    try:
        stored = inbox.append(source=source, delivery_id=delivery_id, event=event, payload=payload)
    except (OperationalError, InterfaceError) as error:
        # The sender retries 5xx. The reason is logged here, not sent: it names the database.
        logger.warning("webhook inbox unavailable: %s", log_reason(error))
        return problem(
            503, "Unavailable", "the inbox cannot store deliveries now", {"Retry-After": "30"}
        )
    status = "accepted" if stored else "duplicate"
    return JSONResponse({"status": status, "delivery_id": delivery_id}, status_code=202)


async def _bounded_body(request: Request) -> bytes | JSONResponse:
    """The raw body, refused with 413 past ``MAX_BODY_BYTES`` without reading it all."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        return problem(413, "Body too large", f"limit is {MAX_BODY_BYTES} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            return problem(413, "Body too large", f"limit is {MAX_BODY_BYTES} bytes")
    return bytes(body)


def _json(body: bytes) -> dict[str, Any] | JSONResponse:
    try:
        payload = parse_json(body)
    except InvalidJson as error:
        return problem(400, "Malformed JSON", str(error))
    if not isinstance(payload, dict):
        return problem(400, "Invalid payload", "the body must be a JSON object")
    return payload
