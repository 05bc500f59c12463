"""Where alerts go: Slack, e-mail, a signed JSON webhook.

Secrets (webhook URLs, SMTP credentials, the signing secret) are read from the environment
variables the settings name, at send time, and never appear in errors or logs: every error a
channel reports is redacted of its secrets before anyone sees it. A channel whose variable is
unset is "not configured" - reported, not raised. ``send_all`` sends to every channel, so one
that fails (server down, bad credentials) never keeps the others from delivering.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import smtplib
import ssl
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate
from typing import Any

from batch_inference_platform.lib.alerts.message import Alert

DEFAULT_TIMEOUT = 10.0
"""Seconds a channel may take to connect and deliver."""
SIGNATURE_HEADER = "X-BIP-Signature"
USER_AGENT = "batch-inference-platform-alerts"
NOT_CONFIGURED = "not configured"
"""How ``send_all`` reports a channel whose environment variable is unset."""
_LOG = logging.getLogger(__name__)


class ChannelNotConfigured(RuntimeError):
    """The environment variable a channel needs is not set."""


class Channel(ABC):
    """One way of reaching people; ``send`` raises when the alert was not delivered."""

    name: str
    environ: Mapping[str, str] | None

    @abstractmethod
    def send(self, alert: Alert) -> None: ...

    @abstractmethod
    def secrets(self) -> list[str]:
        """The secret values currently configured (to redact from errors)."""

    def _env(self, variable: str) -> str:
        """The variable's value, '' when unset or when no variable is named."""
        env = os.environ if self.environ is None else self.environ
        return env.get(variable, "").strip() if variable else ""

    def _required(self, variable: str) -> str:
        value = self._env(variable)
        if not value:
            raise ChannelNotConfigured(f"{variable or 'its environment variable'} is not set")
        return value


@dataclass
class SlackChannel(Channel):
    """A Slack incoming webhook (``{"text", "blocks"}``); its URL is the secret."""

    webhook_url_env: str
    timeout: float = DEFAULT_TIMEOUT
    environ: Mapping[str, str] | None = field(default=None, repr=False)
    name: str = "slack"

    def send(self, alert: Alert) -> None:
        url = self._required(self.webhook_url_env)
        _post(url, json.dumps(slack_payload(alert)).encode(), {}, self.timeout)

    def secrets(self) -> list[str]:
        return [self._env(self.webhook_url_env)]


@dataclass
class WebhookChannel(Channel):
    """A JSON POST of every field of the alert, signed when a secret is set: header
    ``X-BIP-Signature: sha256=<hex HMAC-SHA256 of the exact body bytes>``."""

    url_env: str
    secret_env: str = ""
    timeout: float = DEFAULT_TIMEOUT
    environ: Mapping[str, str] | None = field(default=None, repr=False)
    name: str = "webhook"

    def send(self, alert: Alert) -> None:
        url = self._required(self.url_env)
        body = json.dumps(alert.to_dict(), sort_keys=True, separators=(",", ":")).encode()
        secret = self._env(self.secret_env)
        headers = {SIGNATURE_HEADER: signature(body, secret)} if secret else {}
        _post(url, body, headers, self.timeout)

    def secrets(self) -> list[str]:
        return [self._env(self.url_env), self._env(self.secret_env)]


LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
"""A local relay may take a login in the clear; anything else needs STARTTLS."""


@dataclass
class EmailChannel(Channel):
    """Plain-text mail over SMTP: STARTTLS when configured, login when the user variable is
    set (the password variable must then be set too). Subject ``[batch-inference] <title>``."""

    smtp_host: str
    smtp_port: int
    sender: str
    recipients: list[str]
    starttls: bool = False
    username_env: str = ""
    password_env: str = ""
    timeout: float = DEFAULT_TIMEOUT
    environ: Mapping[str, str] | None = field(default=None, repr=False)
    name: str = "email"

    def send(self, alert: Alert) -> None:
        if not self.recipients:
            raise ChannelNotConfigured("no recipients")
        username = self._env(self.username_env)
        password = self._required(self.password_env) if username else ""
        if username and not self.starttls and self.smtp_host not in LOOPBACK_HOSTS:
            raise ChannelNotConfigured(
                f"refusing to send SMTP credentials to {self.smtp_host} without STARTTLS "
                "(set email.starttls: true)"
            )
        with smtplib.SMTP(self.smtp_host, self.smtp_port, timeout=self.timeout) as smtp:
            if self.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if username:
                smtp.login(username, password)
            smtp.send_message(email_message(alert, self.sender, self.recipients))

    def secrets(self) -> list[str]:
        return [self._env(self.password_env)]


def send_all(
    alert: Alert, channels: Iterable[Channel], *, logger: logging.Logger | None = None
) -> dict[str, str | None]:
    """Send ``alert`` to every channel; returns each channel's error (``None``: delivered).

    An unset variable is reported as ``"not configured: ..."``; any other failure as its
    redacted error message, and logged at error level (without secrets)."""
    log = logger or _LOG
    outcome: dict[str, str | None] = {}
    for channel in channels:
        try:
            channel.send(alert)
        except ChannelNotConfigured as error:
            outcome[channel.name] = f"{NOT_CONFIGURED}: {error}"
            log.warning(f"alert {alert.title!r}: channel {channel.name} {outcome[channel.name]}")
        except Exception as error:
            outcome[channel.name] = _redact(_describe(error), channel.secrets())
            log.error(
                f"alert {alert.title!r}: channel {channel.name} failed: {outcome[channel.name]}"
            )
        else:
            outcome[channel.name] = None
            log.info(f"alert {alert.title!r} sent to {channel.name}")
    return outcome


def signature(body: bytes, secret: str) -> str:
    """The ``X-BIP-Signature`` value of ``body``: ``sha256=<hex HMAC-SHA256>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def slack_payload(alert: Alert) -> dict[str, Any]:
    """Slack's incoming-webhook message: a fallback ``text`` and Block Kit ``blocks``."""
    fields = [
        {"type": "mrkdwn", "text": f"*{label}*\n{_slack_escape(value)[:1900]}"}
        for label, value in alert.facts()
    ]
    error = _slack_escape(alert.error)[:2800]
    return {
        "text": _slack_escape(f"{alert.title}: job {alert.job_name}, run {alert.run_id}")
        + f" - {alert.link}",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": alert.title[:150]}},
            *({"type": "section", "fields": fields[i : i + 10]} for i in range(0, len(fields), 10)),
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*Error*\n```{error}```"}},
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": f"<{alert.link}|Open the run in Dagster>"},
            },
        ],
    }


def email_message(alert: Alert, sender: str, recipients: list[str]) -> EmailMessage:
    """The alert as a plain-text mail: the same facts, the error and the link."""
    message = EmailMessage()
    message["Subject"] = f"[batch-inference] {alert.title}"
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Date"] = formatdate(alert.at.timestamp(), localtime=False, usegmt=True)
    message.set_content(alert.text())
    return message


def _post(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> None:
    """POST JSON; raises unless the answer is 2xx."""
    if not url.startswith(("http://", "https://")):
        raise ValueError("the URL must start with http:// or https://")
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": USER_AGENT, **headers},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        response.read()


def _describe(error: Exception) -> str:
    """A short, URL-free description of a delivery error."""
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return f"cannot reach the server: {error.reason}"
    if isinstance(error, smtplib.SMTPResponseException):
        reply = error.smtp_error
        text = reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
        return f"SMTP {error.smtp_code}: {text}"
    return f"{type(error).__name__}: {error}"


def _redact(text: str, secrets: Iterable[str]) -> str:
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
