"""``alerts``: who is told about failures, how, and when (``alerts`` in monitoring.yml)."""

import logging

import dagster as dg
import pydantic

from batch_inference_platform.lib.alerts import (
    Alert,
    Channel,
    EmailChannel,
    SlackChannel,
    WebhookChannel,
    run_link,
    send_all,
)

CHANNEL_NAMES = ("slack", "email", "webhook")


class AlertsResource(dg.ConfigurableResource):
    """Who is told about failures, how, and when (``alerts`` in monitoring.yml).

    Only the names of environment variables are configured here; their values (webhook URLs,
    SMTP password, signing secret) are read at send time and never logged."""

    dagster_url: str
    """Base URL of the Dagster UI; alerts link to ``<dagster_url>/runs/<run id>``."""
    threshold: int = pydantic.Field(default=1, ge=1)
    """Alert when a job has failed this many times in a row (1: every failure); each further
    failure in the same streak alerts again, its title saying how many in a row."""
    notification: list[str] = pydantic.Field(default_factory=lambda: list(CHANNEL_NAMES))
    """Channels alerts go to, of slack, email, webhook."""
    slack_webhook_url_env: str = "SLACK_WEBHOOK_URL"
    smtp_host: str = "localhost"
    smtp_port: int = 25
    smtp_starttls: bool = False
    email_sender: str = "batch-inference@localhost"
    email_recipients: list[str] = pydantic.Field(default_factory=list)
    smtp_username_env: str = ""
    """Empty, or a variable that is unset: no SMTP login."""
    smtp_password_env: str = ""
    webhook_url_env: str = "ALERT_WEBHOOK_URL"
    webhook_secret_env: str = ""
    """Empty, or a variable that is unset: the webhook is not signed."""
    timeout_seconds: float = 10.0
    """Per channel: connecting and delivering."""

    def link(self, run_id: str) -> str:
        """The run's page in the Dagster UI."""
        return run_link(self.dagster_url, run_id)

    def channel(self, name: str) -> Channel:
        """The channel called ``name`` (slack, email or webhook)."""
        timeout = self.timeout_seconds
        if name == "slack":
            return SlackChannel(self.slack_webhook_url_env, timeout=timeout)
        if name == "email":
            return EmailChannel(
                smtp_host=self.smtp_host,
                smtp_port=self.smtp_port,
                sender=self.email_sender,
                recipients=list(self.email_recipients),
                starttls=self.smtp_starttls,
                username_env=self.smtp_username_env,
                password_env=self.smtp_password_env,
                timeout=timeout,
            )
        if name == "webhook":
            return WebhookChannel(self.webhook_url_env, self.webhook_secret_env, timeout=timeout)
        raise ValueError(f"unknown alert channel {name!r} (use {', '.join(CHANNEL_NAMES)})")

    def alert(self, alert: Alert, *, logger: logging.Logger | None = None) -> dict[str, str | None]:
        """Send ``alert`` to every channel in ``notification``; each channel's error, or None
        when it delivered. Never raises for a channel: failures are returned and logged."""
        log = logger or logging.getLogger(__name__)
        known = [name for name in dict.fromkeys(self.notification) if name in CHANNEL_NAMES]
        outcome = send_all(alert, [self.channel(name) for name in known], logger=log)
        for name in self.notification:
            if name not in CHANNEL_NAMES:
                outcome[name] = f"unknown channel (use {', '.join(CHANNEL_NAMES)})"
                log.error(f"alert {alert.title!r}: {name!r}: {outcome[name]}")
        return outcome
