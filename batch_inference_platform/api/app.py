"""The platform's ASGI application (served by uvicorn: ``batch-inference api``)."""

from __future__ import annotations

import os

from fastapi import FastAPI

from batch_inference_platform.api.webhooks import webhook_router
from batch_inference_platform.lib.inbox.store import WebhookInbox


def create_app(inbox_url: str) -> FastAPI:
    """The service; webhook secrets come from the environment, never from files."""
    app = FastAPI(title="batch_inference_platform", version="1")
    app.include_router(
        webhook_router(
            WebhookInbox(inbox_url),
            mlflow_secret=os.environ.get("MLFLOW_WEBHOOK_SECRET"),
            databricks_secret=os.environ.get("DATABRICKS_WEBHOOK_SECRET"),
        )
    )
    return app
