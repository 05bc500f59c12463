"""Service levels over a run history: did jobs finish in time, fast enough, without losing
records? (monitoring.yml ``performance.sla-targets``)

All three figures are computed over the same runs - those that finished (succeeded or failed)
within the window:

- **job completion**: the share of those runs that *succeeded* within ``job_completion.within``
  (a failed run never counts as completed); passes when the share is at least
  ``job_completion.quantile``.
- **throughput**: records scored / hours of run time, where records scored are the records of
  succeeded runs (less any they report as failed) and run time is the sum of every run's
  duration (end - start), failed runs included: time spent failing is capacity lost. Passes at
  ``data_throughput`` records per hour or more.
- **error rate**: failed records / all records, where every record of a failed run counts as
  failed. Passes below ``error_rate`` (or with no failed record at all).

A history without runs (or without records, for the error rate) passes vacuously, and says so.

Each run belongs to a deployment (``RunRecord.deployment``: the deployment whose jobs or
predictions it ran, ``tenants`` for client jobs); the report has the same figures for each
deployment (``SlaReport.deployments``) next to the totals, which the targets judge.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

SUCCESS, FAILURE = "SUCCESS", "FAILURE"
UNKNOWN = "(unknown)"
"""The deployment of runs whose deployment is not known."""


@dataclass(frozen=True)
class JobCompletionTarget:
    """``quantile`` of the runs succeed ``within`` this duration (e.g. 90% < 1 hour)."""

    quantile: float
    within: dt.timedelta


@dataclass(frozen=True)
class SlaTargets:
    """The service-level targets (monitoring.yml ``performance.sla-targets``)."""

    job_completion: JobCompletionTarget
    data_throughput: float
    """Records scored per hour of run time, at least."""
    error_rate: float
    """Failed records / all records, below this."""


@dataclass(frozen=True)
class RunRecord:
    """One finished run: when it ran, and the records it handled (``failed_records`` of them
    failed; all of them when the run failed)."""

    job_name: str
    status: str
    """``SUCCESS`` or ``FAILURE``."""
    start: dt.datetime
    end: dt.datetime
    records: int
    failed_records: int = 0
    deployment: str = ""
    """Whose run it is: a deployment's name, ``tenants``, or empty when unknown."""

    @property
    def succeeded(self) -> bool:
        return self.status == SUCCESS

    @property
    def seconds(self) -> float:
        """Run time (end - start), never negative."""
        return max((self.end - self.start).total_seconds(), 0.0)

    @property
    def total_records(self) -> int:
        return max(self.records, self.failed_records, 0)

    @property
    def failed(self) -> int:
        """Records that failed: all of a failed run's, else those the run reports."""
        return self.total_records if not self.succeeded else max(self.failed_records, 0)


@dataclass(frozen=True)
class SlaFigure:
    """One target: the measured value, the target, whether it is met, and why (one line)."""

    name: str
    value: float
    target: float
    passed: bool
    explanation: str
    unit: str


@dataclass(frozen=True)
class SlaReport:
    """The service levels of the runs that finished in ``window`` up to ``until``."""

    window: dt.timedelta
    until: dt.datetime
    runs: int
    succeeded: int
    failed: int
    completed_in_time: int
    """Succeeded runs that took at most ``job_completion.within``."""
    records: int
    failed_records: int
    run_hours: float
    completion_quantile_seconds: float | None
    """The run time within which ``job_completion.quantile`` of the runs succeeded; None when
    fewer than that share succeeded at all."""
    job_completion: SlaFigure
    throughput: SlaFigure
    error_rate: SlaFigure
    deployments: Mapping[str, SlaReport] = field(default_factory=dict)
    """The same figures over each deployment's runs (by name; ``(unknown)`` for runs of no
    known deployment); empty in those per-deployment reports themselves."""

    @property
    def figures(self) -> list[SlaFigure]:
        return [self.job_completion, self.throughput, self.error_rate]

    @property
    def passed(self) -> bool:
        return all(figure.passed for figure in self.figures)

    def markdown(self) -> str:
        """The report as a Markdown table (for the UI)."""
        lines = [
            f"SLA over the last {_duration(self.window)} (until {self.until:%Y-%m-%d %H:%M} UTC):"
            f" {self.runs} runs, {self.succeeded} succeeded, {self.failed} failed",
            "",
            "| target | value | goal | status | why |",
            "|---|---|---|---|---|",
        ]
        for figure in self.figures:
            status = "pass" if figure.passed else "**FAIL**"
            lines.append(
                f"| {figure.name} | {_format(figure.value, figure.unit)} "
                f"| {_format(figure.target, figure.unit)} | {status} | {figure.explanation} |"
            )
        if self.deployments:
            lines += ["", *self.deployment_table()]
        return "\n".join(lines)

    def deployment_table(self) -> list[str]:
        """Markdown lines: each deployment's runs, records and figures (one row each)."""
        lines = [
            "| deployment | runs | succeeded | failed | records | failed records | run hours "
            "| in time | throughput | error rate | status |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, report in self.deployments.items():
            figures = [report.job_completion, report.throughput, report.error_rate]
            status = "pass" if report.passed else "**FAIL**"
            lines.append(
                f"| {name} | {report.runs} | {report.succeeded} | {report.failed} "
                f"| {report.records:,} | {report.failed_records:,} | {report.run_hours:.2f} "
                + " ".join(f"| {_format(f.value, f.unit)}" for f in figures)
                + f" | {status} |"
            )
        return lines


def sla_report(
    runs: Iterable[RunRecord],
    targets: SlaTargets,
    window: dt.timedelta,
    *,
    until: dt.datetime | None = None,
    by_deployment: bool = True,
) -> SlaReport:
    """The SLA report of ``runs`` that ended within ``window`` before ``until`` (default now,
    UTC), with each deployment's own (unless ``by_deployment`` is False); datetimes must be
    timezone-aware."""
    until = until or dt.datetime.now(dt.UTC)
    kept = [run for run in runs if until - window <= run.end <= until]
    deployments: dict[str, SlaReport] = {}
    if by_deployment:
        for name in sorted({run.deployment for run in kept}, key=lambda n: (not n, n)):
            mine = [run for run in kept if run.deployment == name]
            deployments[name or UNKNOWN] = sla_report(
                mine, targets, window, until=until, by_deployment=False
            )
    succeeded = [run for run in kept if run.succeeded]
    within = targets.job_completion.within
    in_time = [run for run in succeeded if run.seconds <= within.total_seconds()]
    records = sum(run.total_records for run in kept)
    failed_records = sum(run.failed for run in kept)
    scored = sum(run.total_records - run.failed for run in succeeded)
    hours = sum(run.seconds for run in kept) / 3600
    span = f"in the last {_duration(window)}"
    return SlaReport(
        window=window,
        until=until,
        runs=len(kept),
        succeeded=len(succeeded),
        failed=len(kept) - len(succeeded),
        completed_in_time=len(in_time),
        records=records,
        failed_records=failed_records,
        run_hours=hours,
        completion_quantile_seconds=_completion_quantile(kept, targets.job_completion.quantile),
        job_completion=_job_completion(len(kept), len(in_time), targets, span),
        throughput=_throughput(len(kept), scored, hours, targets.data_throughput, span),
        error_rate=_error_rate(records, failed_records, targets.error_rate, span),
        deployments=deployments,
    )


def _job_completion(runs: int, in_time: int, targets: SlaTargets, span: str) -> SlaFigure:
    quantile, within = targets.job_completion.quantile, _duration(targets.job_completion.within)
    if runs == 0:
        return SlaFigure(
            "job completion", 1.0, quantile, True, f"no finished runs {span}: passes vacuously", "%"
        )
    share = in_time / runs
    passed = share >= quantile
    verdict = "at least" if passed else "below"
    why = (
        f"{in_time} of {runs} finished runs ({share:.1%}) succeeded within {within} {span}, "
        f"{verdict} the {quantile:.0%} target"
    )
    return SlaFigure("job completion", share, quantile, passed, why, "%")


def _throughput(runs: int, scored: int, hours: float, target: float, span: str) -> SlaFigure:
    if runs == 0:
        why = f"no finished runs {span}: passes vacuously"
        return SlaFigure("throughput", 0.0, target, True, why, "records/hour")
    rate = scored / hours if hours > 0 else (math.inf if scored else 0.0)
    passed = rate >= target
    why = (
        f"{scored:,} records scored in {hours:.2f} h of run time ({runs} runs) {span}: "
        f"{_format(rate, 'records/hour')}, {'at least' if passed else 'below'} "
        f"{_format(target, 'records/hour')}"
    )
    return SlaFigure("throughput", rate, target, passed, why, "records/hour")


def _error_rate(records: int, failed: int, target: float, span: str) -> SlaFigure:
    if records == 0:
        why = f"no records {span}: passes vacuously"
        return SlaFigure("error rate", 0.0, target, True, why, "%")
    rate = failed / records
    passed = failed == 0 or rate < target
    why = (
        f"{failed:,} of {records:,} records failed ({rate:.3%}) {span}, "
        f"{'below' if passed else 'not below'} the {target:.3%} limit"
    )
    return SlaFigure("error rate", rate, target, passed, why, "%")


def _completion_quantile(runs: list[RunRecord], quantile: float) -> float | None:
    """Nearest-rank ``quantile`` of run times, a failed run counting as never completing."""
    if not runs:
        return None
    times = sorted(run.seconds if run.succeeded else math.inf for run in runs)
    value = times[max(math.ceil(quantile * len(times)) - 1, 0)]
    return None if math.isinf(value) else value


def _duration(delta: dt.timedelta) -> str:
    seconds = delta.total_seconds()
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count > 1 else ''}"
    return f"{seconds:g} s"


def _format(value: float, unit: str) -> str:
    if unit == "%":
        return f"{value:.3%}" if value < 0.01 else f"{value:.1%}"
    if math.isinf(value):
        return f"inf {unit}"
    return f"{value:,.0f} {unit}"
