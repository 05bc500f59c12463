"""Real receivers on loopback for alert tests: an HTTP sink (stdlib) and an SMTP sink
(aiosmtpd), each on a free port, recording exactly what arrived."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from .servers import free_port


@dataclass(frozen=True)
class HttpRequest:
    """One request the HTTP sink received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class HttpSink:
    """What an HTTP sink has received; ``url`` is where to send."""

    url: str
    status: int = 200
    requests: list[HttpRequest] = field(default_factory=list)


@contextmanager
def http_sink(status: int = 200) -> Iterator[HttpSink]:
    """A ThreadingHTTPServer on a free loopback port answering every POST with ``status``."""
    port = free_port()
    sink = HttpSink(url=f"http://127.0.0.1:{port}", status=status)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {name.lower(): value for name, value in self.headers.items()}
            sink.requests.append(HttpRequest("POST", self.path, headers, body))
            self.send_response(sink.status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            return

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@dataclass(frozen=True)
class Mail:
    """One message the SMTP sink accepted."""

    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    login: str | None
    """The user that authenticated, if any."""


@dataclass
class SmtpSink:
    """What an SMTP sink has received."""

    host: str
    port: int
    mails: list[Mail] = field(default_factory=list)


@contextmanager
def smtp_sink(credentials: tuple[str, str] | None = None) -> Iterator[SmtpSink]:
    """An aiosmtpd server on a free loopback port; with ``credentials`` it offers AUTH
    (without TLS: loopback only) and accepts only that user and password; each mail records
    who logged in."""
    sink = SmtpSink(host="127.0.0.1", port=free_port())

    class Handler:
        async def handle_DATA(
            self, server: SMTPServer, session: Session, envelope: Envelope
        ) -> str:
            content = cast(bytes, envelope.original_content or b"")
            message = cast(EmailMessage, message_from_bytes(content, policy=policy.default))
            auth = session.auth_data
            sink.mails.append(
                Mail(
                    mail_from=envelope.mail_from or "",
                    rcpt_tos=list(envelope.rcpt_tos),
                    message=message,
                    login=auth.login.decode() if isinstance(auth, LoginPassword) else None,
                )
            )
            return "250 Message accepted for delivery"

    def authenticate(
        server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if credentials is None or not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        ok = (data.login.decode(), data.password.decode()) == credentials
        return AuthResult(success=ok, handled=False, auth_data=data if ok else None)

    options: dict[str, Any] = {}
    if credentials is not None:
        options = {"authenticator": authenticate, "auth_require_tls": False}
    controller = Controller(Handler(), hostname=sink.host, port=sink.port, **options)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()
