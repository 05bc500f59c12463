"""The platform's ASGI application (served by uvicorn: ``batch-inference api``).

Hardened for the open network: a body limit on every endpoint (413 before reading), problem
documents for every error, security headers on every response, no redirects built from the
``Host`` header, interactive docs only in environment ``local``, and - through ``serve`` /
``server_config`` - no ``server`` banner."""

from __future__ import annotations

import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI

from batch_inference_platform.api.headers import SecurityHeadersMiddleware
from batch_inference_platform.api.jobs import JobsService, jobs_router
from batch_inference_platform.api.limits import DEFAULT_MAX_BODY_BYTES, BodyLimitMiddleware
from batch_inference_platform.api.problems import install_problem_handlers
from batch_inference_platform.api.recommendations import recommendations_router
from batch_inference_platform.api.webhooks import configure_delivery_log, webhook_router
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
    environment: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> FastAPI:
    """The service. Webhook secrets come from the environment, never from files. With
    ``jobs`` it also serves the client API; with ``relay`` a background thread publishes the
    outbox to Kafka while the service runs. ``/docs`` (Swagger UI, assets from a CDN) is
    served only when ``environment`` is ``local``; ``/openapi.json`` always. A request body
    over ``max_body_bytes`` gets 413 on every endpoint."""

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
        docs_url="/docs" if environment == "local" else None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
        redirect_slashes=False,
    )
    install_problem_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes)
    app.add_middleware(SecurityHeadersMiddleware)  # added last: outermost, sees every answer
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


def server_config(app: FastAPI, host: str, port: int, **options: Any) -> uvicorn.Config:
    """How the service is served: uvicorn without its ``server`` banner."""
    return uvicorn.Config(app, host=host, port=port, server_header=False, **options)


def serve(app: FastAPI, host: str, port: int) -> None:
    """Run the service under uvicorn until interrupted (``batch-inference api``), one log
    line per webhook delivery on stderr."""
    configure_delivery_log()
    uvicorn.Server(server_config(app, host, port)).run()
