"""Webhook signatures: who sent a delivery, and whether it is fresh.

MLflow OSS signs ``"{delivery_id}.{timestamp}.{raw body}"`` with HMAC-SHA256 and sends
``X-MLflow-Signature: v1,<base64 digest>``; Databricks registry webhooks send the hex
HMAC-SHA256 of the raw body in ``X-Databricks-Signature``. Digests are compared in constant
time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

MAX_AGE_SECONDS = 300
"""Deliveries older than this (or from the future by more than the clock skew) are refused."""
CLOCK_SKEW_SECONDS = 30


class SignatureError(ValueError):
    """A delivery whose signature, or signing timestamp, cannot be trusted."""


def verify_mlflow(
    secret: str,
    *,
    delivery_id: str | None,
    timestamp: str | None,
    signature: str | None,
    body: bytes,
    now: float,
) -> None:
    """Raise ``SignatureError`` unless the MLflow delivery is signed with ``secret`` and fresh."""
    if not (delivery_id and timestamp and signature):
        raise SignatureError(
            "missing X-MLflow-Delivery-Id, X-MLflow-Timestamp or X-MLflow-Signature"
        )
    try:
        sent = int(timestamp)
    except ValueError as error:
        raise SignatureError(f"X-MLflow-Timestamp {timestamp!r} is not unix seconds") from error
    if sent < now - MAX_AGE_SECONDS:
        raise SignatureError(f"delivery signed {int(now - sent)} s ago (limit {MAX_AGE_SECONDS} s)")
    if sent > now + CLOCK_SKEW_SECONDS:
        raise SignatureError(f"delivery signed {int(sent - now)} s in the future")
    version, _, digest = signature.partition(",")
    if version != "v1" or not digest:
        raise SignatureError("X-MLflow-Signature must be 'v1,<base64 digest>'")
    message = f"{delivery_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest())
    if not hmac.compare_digest(expected, digest.encode()):
        raise SignatureError("X-MLflow-Signature does not match the body")


def verify_databricks(secret: str, *, signature: str | None, body: bytes) -> None:
    """Raise ``SignatureError`` unless the body is signed with ``secret`` (hex HMAC-SHA256)."""
    if not signature:
        raise SignatureError("missing X-Databricks-Signature")
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature.strip().lower()):
        raise SignatureError("X-Databricks-Signature does not match the body")


def sign_mlflow(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """The ``X-MLflow-Signature`` value MLflow would send (for clients and tests)."""
    message = f"{delivery_id}.{timestamp}.".encode() + body
    digest = base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest())
    return "v1," + digest.decode()
