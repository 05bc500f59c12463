"""The platform's ASGI application (served by uvicorn: ``batch-inference api``)."""

from __future__ import annotations

import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from batch_inference_platform.api.jobs import JobsService, jobs_router
from batch_inference_platform.api.problems import install_problem_handlers
from batch_inference_platform.api.recommendations import recommendations_router
from batch_inference_platform.api.webhooks import webhook_router
from batch_inference_platform.lib.inbox.relay import OutboxRelay
from batch_inference_platform.lib.inbox.store import WebhookInbox
from batch_inference_platform.lib.realtime.cache import RecommendationCache

RELAY_INTERVAL_SECONDS = 0.5


def create_app(
    inbox_url: str,
    *,
    jobs: JobsService | None = None,
    relay: OutboxRelay | None = None,
    recommendations: RecommendationCache | None = None,
) -> FastAPI:
    """The service. Webhook secrets come from the environment, never from files. With
    ``jobs`` it also serves the client API; with ``relay`` a background thread publishes the
    outbox to Kafka while the service runs."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stop = threading.Event()
        thread = None
        if relay is not None:
            thread = threading.Thread(
                target=relay.run, args=(stop, RELAY_INTERVAL_SECONDS), daemon=True
            )
            thread.start()
        yield
        stop.set()
        if thread is not None:
            thread.join(timeout=30)

    app = FastAPI(
        title="batch_inference_platform",
        version="1",
        description="Client batch inference jobs and model-registry webhook receivers.",
        lifespan=lifespan,
    )
    install_problem_handlers(app)
    app.include_router(
        webhook_router(
            WebhookInbox(inbox_url),
            mlflow_secret=os.environ.get("MLFLOW_WEBHOOK_SECRET"),
            databricks_secret=os.environ.get("DATABRICKS_WEBHOOK_SECRET"),
        )
    )
    if jobs is not None:
        app.include_router(jobs_router(jobs))
        if recommendations is not None:
            app.include_router(recommendations_router(recommendations, jobs.tenants))
    return app
