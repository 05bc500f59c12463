"""RFC 9457 problem documents for every error the service answers.

Bad input is answered with a 4xx naming what is wrong; anything unexpected with a 500 that
names nothing internal (the server logs the traceback). Messages echo at most a short,
escaped excerpt of what the client sent."""

from __future__ import annotations

import re

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from batch_inference_platform.api.headers import SECURITY_HEADERS

MAX_DETAIL_CHARS = 1000
"""A problem's detail is cut here (a client can make validation errors long)."""
PROBLEM_JSON = "application/problem+json"


def problem(
    status: int, title: str, detail: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """An ``application/problem+json`` response."""
    if len(detail) > MAX_DETAIL_CHARS:
        detail = detail[: MAX_DETAIL_CHARS - 3] + "..."
    return JSONResponse(
        {"type": "about:blank", "title": title, "status": status, "detail": detail},
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


class Problem(HTTPException):
    """Raise to answer with a problem document."""

    def __init__(
        self, status: int, title: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(status_code=status, detail=detail, headers=headers)
        self.title = title

    def response(self) -> JSONResponse:
        return problem(self.status_code, self.title, str(self.detail), dict(self.headers or {}))


def log_reason(error: BaseException) -> str:
    """One line for the server's log saying why a backing store failed: the driver's first
    line, with any credentials in a URL masked. Never sent to the client (it names hosts)."""
    orig = getattr(error, "orig", None) or error
    lines = str(orig).strip().splitlines()
    line = lines[0] if lines else type(orig).__name__
    line = re.sub(r"://[^@/\s]*@", "://***@", line)
    return re.sub(r"(?i)(password\s*=\s*)\S+", r"\1***", line)[:500]


def _location(loc: tuple[object, ...]) -> str:
    parts = [str(p) if len(str(p)) <= 40 else repr(str(p)[:40]) + "..." for p in loc]
    return ".".join(p for p in parts if p != "body") or "body"


def install_problem_handlers(app: FastAPI) -> None:
    """Validation errors, HTTP errors and unexpected errors become problem documents."""

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        details = "; ".join(f"{_location(e['loc'])}: {e['msg']}" for e in error.errors())
        return problem(422, "Invalid request", details)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, error: HTTPException) -> JSONResponse:
        title = getattr(error, "title", None) or {
            401: "Unauthorized",
            404: "Not found",
            405: "Method not allowed",
        }.get(error.status_code, "Error")
        return problem(error.status_code, title, str(error.detail), dict(error.headers or {}))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception) -> JSONResponse:
        # Starlette's outermost middleware sends this and re-raises, so the server logs the
        # traceback; the client learns nothing internal. The security headers are added here
        # because this response bypasses the other middleware.
        return problem(
            500,
            "Internal error",
            "the request could not be handled; the error was logged",
            dict(SECURITY_HEADERS),
        )
