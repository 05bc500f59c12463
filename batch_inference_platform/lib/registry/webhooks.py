"""Registering the platform's receiver as a webhook on an MLflow server (idempotent)."""

from __future__ import annotations

import re
from urllib.parse import urlparse

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

WEBHOOK_NAME = "batch-inference-platform"
EVENTS = [
    "model_version.created",
    "model_version_alias.created",
    "model_version_alias.deleted",
]
"""Registry events that can change which version the platform serves."""


class WebhookRegistrationError(RuntimeError):
    """The registry cannot take the webhook (no webhooks API, or it refused); one line."""


def register_webhook(tracking_uri: str, *, url: str, secret: str) -> str:
    """Create, or update in place, the platform's webhook; returns its id.

    Only an MLflow tracking server (``http(s)://``) delivers webhooks: a sqlite or file URI
    has no server to send them, and Databricks registers its registry webhooks through its
    own API. Those, and a server that refuses, raise ``WebhookRegistrationError``."""
    _require_server(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        return _create_or_update(client, url=url, secret=secret)
    except MlflowException as error:
        # MLflow's message repeats the URL it called, user info (a credential) included.
        message = _USER_INFO.sub("//", (error.message or str(error)).strip())
        first = message.splitlines()[0][:300]
        raise WebhookRegistrationError(
            f"the MLflow server at {_shown(tracking_uri)} refused the webhook: {first}"
        ) from error
    except OSError as error:
        raise WebhookRegistrationError(
            f"cannot reach the MLflow server at {_shown(tracking_uri)}: {type(error).__name__}"
        ) from error


_USER_INFO = re.compile(r"//[^/@\s]+@")
"""The ``user:password@`` of a URL in a message."""


def _shown(uri: str) -> str:
    """``uri`` without its user info (``https://user:token@host`` carries a credential)."""
    parts = urlparse(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=host).geturl()


def _require_server(tracking_uri: str) -> None:
    scheme = urlparse(tracking_uri).scheme.lower()
    if scheme in ("http", "https"):
        return
    if scheme.startswith("databricks") or tracking_uri.startswith("databricks"):
        raise WebhookRegistrationError(
            f"tracking URI {tracking_uri!r} is Databricks: register registry webhooks with the "
            "Databricks registry-webhooks API, pointing at /api/v1/webhooks/databricks"
        )
    raise WebhookRegistrationError(
        f"tracking URI {tracking_uri!r} has no webhooks API: webhooks are delivered by an "
        "MLflow tracking server; start one (make mlflow) and point the platform at it "
        "(BIP__BATCH_INFERENCE__MLFLOW__TRACKING_URI=http://127.0.0.1:5000)"
    )


def _create_or_update(client: MlflowClient, *, url: str, secret: str) -> str:
    page_token: str | None = None
    while True:
        page = client.list_webhooks(page_token=page_token)
        for hook in page:
            if hook.name == WEBHOOK_NAME:
                client.update_webhook(
                    hook.webhook_id,
                    url=url,
                    events=list(EVENTS),  # pyright: ignore[reportArgumentType]
                    secret=secret,
                )
                return hook.webhook_id
        page_token = page.token
        if not page_token:
            break
    created = client.create_webhook(
        WEBHOOK_NAME,
        url,
        list(EVENTS),  # pyright: ignore[reportArgumentType]
        description="Re-scores when a watched model's serving alias moves.",
        secret=secret,
    )
    return created.webhook_id
