"""What an alert says: what failed (and whose: the deployment), where, when, how bad, and the
link to look at it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Severity = Literal["info", "warning", "error", "critical"]
"""How urgent: ``error`` for a failed run, ``critical`` when a job keeps failing."""


def run_link(dagster_url: str, run_id: str) -> str:
    """The run's page in the Dagster UI."""
    return f"{dagster_url.rstrip('/')}/runs/{run_id}"


@dataclass(frozen=True)
class Alert:
    """One thing a person on call must know about, rendered the same way on every channel."""

    title: str
    """One line, e.g. ``score_partition_job failed``."""
    job_name: str
    run_id: str
    error: str
    """The error message (of each failed step, when several failed)."""
    link: str
    """Where to look: the run's page in the Dagster UI."""
    at: dt.datetime
    """When it happened (timezone-aware)."""
    failed_steps: tuple[str, ...] = ()
    where: Mapping[str, str] = field(default_factory=dict)
    """Code location, tenant, partition(s)... whatever of these the run carries."""
    severity: Severity = "error"
    deployment: str | None = None
    """The deployment whose job or assets failed (None: not one deployment's)."""

    def facts(self) -> list[tuple[str, str]]:
        """The alert as labelled lines, in the order people read them."""
        rows = [("Deployment", self.deployment)] if self.deployment else []
        rows += [("Job", self.job_name), ("Run", self.run_id)]
        if self.failed_steps:
            rows.append(("Failed steps", ", ".join(self.failed_steps)))
        rows += [
            (label.replace("_", " ").capitalize(), value) for label, value in self.where.items()
        ]
        rows += [("When", self.at.isoformat(timespec="seconds")), ("Severity", self.severity)]
        return rows

    def text(self) -> str:
        """A plain-text rendering: title, facts, error and link."""
        lines = [self.title, "", *(f"{label}: {value}" for label, value in self.facts())]
        return "\n".join([*lines, "", "Error:", self.error, "", f"Run: {self.link}", ""])

    def to_dict(self) -> dict[str, Any]:
        """Every field, JSON-ready (the webhook payload)."""
        return {
            "title": self.title,
            "severity": self.severity,
            "deployment": self.deployment,
            "job_name": self.job_name,
            "run_id": self.run_id,
            "failed_steps": list(self.failed_steps),
            "error": self.error,
            "where": dict(self.where),
            "at": self.at.isoformat(),
            "link": self.link,
        }
