"""RFC 9457 problem documents for every error the service answers."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException


def problem(
    status: int, title: str, detail: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """An ``application/problem+json`` response."""
    return JSONResponse(
        {"type": "about:blank", "title": title, "status": status, "detail": detail},
        status_code=status,
        media_type="application/problem+json",
        headers=headers,
    )


class Problem(HTTPException):
    """Raise to answer with a problem document."""

    def __init__(
        self, status: int, title: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(status_code=status, detail=detail, headers=headers)
        self.title = title


def install_problem_handlers(app: FastAPI) -> None:
    """Validation errors and HTTP errors become problem documents naming what is wrong."""

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        details = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}"
            for e in error.errors()
        )
        return problem(422, "Invalid request", details)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, error: HTTPException) -> JSONResponse:
        title = getattr(error, "title", None) or {401: "Unauthorized", 404: "Not found"}.get(
            error.status_code, "Error"
        )
        return problem(error.status_code, title, str(error.detail), dict(error.headers or {}))
