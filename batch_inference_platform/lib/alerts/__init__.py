"""Alerts: what a person on call is told (``Alert``) and the channels that tell them."""

from batch_inference_platform.lib.alerts.channels import (
    NOT_CONFIGURED,
    SIGNATURE_HEADER,
    Channel,
    ChannelNotConfigured,
    EmailChannel,
    SlackChannel,
    WebhookChannel,
    send_all,
    signature,
)
from batch_inference_platform.lib.alerts.message import Alert, Severity, run_link

__all__ = [
    "NOT_CONFIGURED",
    "SIGNATURE_HEADER",
    "Alert",
    "Channel",
    "ChannelNotConfigured",
    "EmailChannel",
    "Severity",
    "SlackChannel",
    "WebhookChannel",
    "run_link",
    "send_all",
    "signature",
]
