"""Limits on what a client may send: body size, JSON shape, and the characters of every string.

Every limit answers with a problem document naming what is wrong (4xx), before anything reaches
a store: bad input never becomes a 500 or a traceback in the log.

- The body limit is an ASGI middleware: a declared ``Content-Length`` over the limit is
  answered 413 before a byte of the body is read; a chunked body is counted as it streams and
  refused with 413 the moment it passes the limit.
- JSON is parsed with limits on nesting depth and integer length (Python's ``json`` raises
  ``RecursionError`` on deep nesting and ``ValueError`` past 4,300 digits), and refuses the
  non-JSON constants ``NaN`` and ``Infinity``.
- Strings are checked with whole-string patterns (``re.fullmatch`` over explicit ASCII
  classes), so a trailing newline, a NUL or a control character never passes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from batch_inference_platform.api.problems import Problem, problem

DEFAULT_MAX_BODY_BYTES = 1 << 20
"""1 MiB: the webhook receivers' limit, and far above any client request."""
MAX_JSON_DEPTH = 32
"""Deepest nesting of objects and arrays a JSON body may have."""
MAX_INT_DIGITS = 64
"""Longest integer literal a JSON body may hold."""

_CONTENT_LENGTH = re.compile(r"[0-9]{1,19}")


class BodyTooLarge(Problem):
    """The request body passed the limit while it was being read."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, "Content too large", f"the request body exceeds {limit} bytes")


class BodyLimitMiddleware:
    """Answer 413 for a body over ``max_bytes``: from ``Content-Length`` before reading it, or
    while reading a chunked body as soon as it passes the limit."""

    def __init__(self, app: ASGIApp, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None:
            if not _CONTENT_LENGTH.fullmatch(declared):
                response = problem(400, "Invalid Content-Length", "Content-Length must be digits")
                await response(scope, receive, send)
                return
            if int(declared) > self.max_bytes:
                await BodyTooLarge(self.max_bytes).response()(scope, receive, send)
                return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge as error:
            if started:
                raise
            await error.response()(scope, receive, send)


# --------------------------------------------------------------------------- JSON


class InvalidJson(ValueError):
    """A body that is not JSON, or JSON past the limits."""


def parse_json(body: bytes) -> Any:
    """The JSON document in ``body``, or ``InvalidJson`` naming what is wrong with it."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InvalidJson(f"the body is not UTF-8 ({error.reason} at byte {error.start})") from None
    try:
        value = json.loads(text, parse_int=_int, parse_constant=_constant)
    except RecursionError:
        raise InvalidJson(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    except json.JSONDecodeError as error:
        raise InvalidJson(f"{error.msg} at line {error.lineno} column {error.colno}") from None
    except InvalidJson:
        raise
    except ValueError as error:  # anything else the decoder refuses
        raise InvalidJson(f"not valid JSON: {str(error)[:200]}") from None
    _check_depth(value)
    return value


def _int(literal: str) -> int:
    digits = len(literal.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise InvalidJson(f"an integer has {digits} digits (limit {MAX_INT_DIGITS})")
    return int(literal)


def _constant(name: str) -> Any:
    raise InvalidJson(f"{name} is not a JSON value")


def _check_depth(value: Any) -> None:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > MAX_JSON_DEPTH:
            raise InvalidJson(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        stack.extend((child, depth + 1) for child in children)


class _LimitedJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_limited_json"):
            try:
                self._limited_json = parse_json(await self.body())
            except InvalidJson as error:
                raise Problem(400, "Malformed JSON", str(error)) from None
        return self._limited_json


class LimitedJsonRoute(APIRoute):
    """A route whose JSON body is parsed with ``parse_json``'s limits (400 past them)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def limited(request: Request) -> Response:
            return await handler(_LimitedJsonRequest(request.scope, request.receive))

        return limited


# --------------------------------------------------------------------------- strings


def matches(pattern: re.Pattern[str], value: str) -> bool:
    """``value`` is entirely ``pattern`` (no trailing newline or other leftover)."""
    return pattern.fullmatch(value) is not None


def shown(value: str, limit: int = 60) -> str:
    """``value`` for an error message: control characters escaped, long values cut."""
    text = repr(value[:limit])
    return text + f"... ({len(value)} characters)" if len(value) > limit else text
