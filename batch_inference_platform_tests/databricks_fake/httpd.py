"""A threaded loopback HTTP server that authenticates bearer tokens and dispatches JSON routes."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from .protocol import ApiError, Json, Params, Route

LOG = logging.getLogger(__name__)


class RestServer(ThreadingHTTPServer):
    """Serves ``routes`` on 127.0.0.1 (a free port) to callers presenting ``Bearer <token>``."""

    daemon_threads = True

    def __init__(self, token: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.token = token
        self.routes: dict[tuple[str, str], Route] = {}
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self) -> None:
        """Serve in a background thread."""
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    @property
    def _rest(self) -> RestServer:
        assert isinstance(self.server, RestServer)
        return self.server

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        try:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self._authenticate()
            url = urlsplit(self.path)
            route = self._rest.routes.get((self.command, url.path))
            if route is None:
                raise ApiError(
                    404, "ENDPOINT_NOT_FOUND", f"No API found for '{self.command} {url.path}'"
                )
            params: Params = dict(parse_qsl(url.query)) if self.command == "GET" else _json(body)
            self._send(200, route(params))
        except ApiError as error:
            self._send(error.status, error.body())
        except Exception as error:
            LOG.exception("fake Databricks failed on %s %s", self.command, self.path)
            self._send(500, {"error_code": "INTERNAL_ERROR", "message": f"Fake failure: {error!r}"})

    def _authenticate(self) -> None:
        header = self.headers.get("Authorization")
        if header is None or not header.startswith("Bearer "):
            raise ApiError(
                401,
                "UNAUTHENTICATED",
                "Credential was not sent or was of an unsupported type for this API.",
            )
        if header.removeprefix("Bearer ") != self._rest.token:
            raise ApiError(401, "UNAUTHENTICATED", "Invalid access token.")

    def _send(self, status: int, payload: Json) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        LOG.debug("%s " + format, self.address_string(), *args)


def _json(body: bytes) -> Params:
    if not body.strip():
        return {}
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise ApiError(
            400,
            "MALFORMED_REQUEST",
            "Invalid JSON given in the body of the request - expected a map",
        )
    return parsed
