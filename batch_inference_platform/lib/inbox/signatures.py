"""Webhook signatures: who sent a delivery, and whether it is fresh.

MLflow OSS signs ``"{delivery_id}.{timestamp}.{raw body}"`` with HMAC-SHA256 and sends
``X-MLflow-Signature: v1,<base64 digest>``; Databricks registry webhooks send the hex
HMAC-SHA256 of the raw body in ``X-Databricks-Signature``, which covers no timestamp: a
Databricks delivery is judged fresh by its signed payload's ``event_timestamp`` (milliseconds).
Digests are compared in constant time; headers that are not the expected ASCII shape (whole
value, ``re.fullmatch``) are refused before any digest is computed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

MAX_AGE_SECONDS = 300
"""Deliveries older than this (or from the future by more than the clock skew) are refused."""
CLOCK_SKEW_SECONDS = 30

_UNIX_SECONDS = re.compile(r"[0-9]{1,12}")
_MLFLOW_SIGNATURE = re.compile(r"v1,[A-Za-z0-9+/]{43}=")
_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")


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
    if not _UNIX_SECONDS.fullmatch(timestamp):
        raise SignatureError(f"X-MLflow-Timestamp {timestamp[:40]!r} is not unix seconds")
    check_fresh(int(timestamp), now, "delivery signed")
    if not _MLFLOW_SIGNATURE.fullmatch(signature):
        raise SignatureError("X-MLflow-Signature must be 'v1,<base64 HMAC-SHA256 digest>'")
    digest = signature[3:]
    message = f"{delivery_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest())
    if not hmac.compare_digest(expected, digest.encode()):
        raise SignatureError("X-MLflow-Signature does not match the body")


def verify_databricks(secret: str, *, signature: str | None, body: bytes) -> None:
    """Raise ``SignatureError`` unless the body is signed with ``secret`` (hex HMAC-SHA256)."""
    if not signature:
        raise SignatureError("missing X-Databricks-Signature")
    if not _HEX_DIGEST.fullmatch(signature):
        raise SignatureError("X-Databricks-Signature must be 64 hex digits (HMAC-SHA256)")
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), signature.lower().encode()):
        raise SignatureError("X-Databricks-Signature does not match the body")


def verify_databricks_timestamp(event_timestamp: object, *, now: float) -> None:
    """Raise ``SignatureError`` unless a Databricks payload's ``event_timestamp`` (unix
    milliseconds, inside the signed body) is within the same window as MLflow's deliveries."""
    if isinstance(event_timestamp, bool) or not isinstance(event_timestamp, int):
        raise SignatureError("event_timestamp must be unix milliseconds (an integer)")
    check_fresh(event_timestamp / 1000, now, "event")


def check_fresh(sent: float, now: float, what: str) -> None:
    """Raise ``SignatureError`` if ``sent`` (unix seconds) is outside the freshness window."""
    if sent < now - MAX_AGE_SECONDS:
        raise SignatureError(f"{what} {int(now - sent)} s ago (limit {MAX_AGE_SECONDS} s)")
    if sent > now + CLOCK_SKEW_SECONDS:
        raise SignatureError(f"{what} {int(sent - now)} s in the future")


def sign_mlflow(secret: str, delivery_id: str, timestamp: str, body: bytes) -> str:
    """The ``X-MLflow-Signature`` value MLflow would send (for clients and tests)."""
    message = f"{delivery_id}.{timestamp}.".encode() + body
    digest = base64.b64encode(hmac.new(secret.encode(), message, hashlib.sha256).digest())
    return "v1," + digest.decode()
