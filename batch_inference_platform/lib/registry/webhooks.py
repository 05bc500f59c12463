"""Registering the platform's receiver as a webhook on an MLflow server (idempotent)."""

from __future__ import annotations

from mlflow import MlflowClient

WEBHOOK_NAME = "batch-inference-platform"
EVENTS = [
    "model_version.created",
    "model_version_alias.created",
    "model_version_alias.deleted",
]
"""Registry events that can change which version the platform serves."""


def register_webhook(tracking_uri: str, *, url: str, secret: str) -> str:
    """Create, or update in place, the platform's webhook; returns its id."""
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
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
