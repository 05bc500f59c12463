"""Webhook receivers: MLflow OSS and Databricks registry events into the durable inbox.

Each endpoint authenticates the delivery by its signature before reading it, refuses what it
cannot trust with a precise 4xx, and answers 2xx only after the event is committed to the
inbox. Replays (the same delivery id) and events the platform does not act on are
acknowledged without a new inbox entry, so the sender stops retrying.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
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
        assert delivery_id is not None  # verified above
        return _store(inbox, "mlflow", delivery_id, event, payload, MLFLOW_EVENTS)

    @router.post("/databricks")
    async def databricks_webhook(request: Request) -> JSONResponse:
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
        # The signature covers no timestamp: the signed payload's own event time must be fresh.
        if "event_timestamp" not in payload:
            return problem(400, "Invalid payload", "missing field: event_timestamp")
        try:
            verify_databricks_timestamp(payload["event_timestamp"], now=time.time())
        except SignatureError as error:
            return problem(401, "Stale delivery", f"event_timestamp: {error}")
        # Databricks sends no delivery id; the signed body's digest identifies a re-send.
        delivery_id = "databricks-" + hashlib.sha256(body).hexdigest()
        return _store(inbox, "databricks", delivery_id, event, payload, DATABRICKS_EVENTS)

    return router


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
