"""The daily partitioning every dated asset shares, and small helpers around it."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from batch_inference_platform.config import load_settings

DAILY_PARTITIONS = dg.DailyPartitionsDefinition(
    start_date=load_settings().application.partitions.start_date.isoformat()
)
"""One partition per calendar day (UTC) of feature data, from the configured start date."""


SINGLE_RUN_BACKFILL = dg.BackfillPolicy.single_run()
"""A backfill is one run over the whole range: start-up and model loading are paid once, and
each partition still commits on its own."""


def partition_days(context: dg.AssetExecutionContext) -> list[dt.date]:
    """The days this run materializes: one for a partition run, many for a backfill."""
    return [dt.date.fromisoformat(key) for key in context.partition_keys]


def combine_checks(
    name: str, verdicts: Mapping[dt.date, tuple[bool, str]], **kwargs: Any
) -> dg.AssetCheckResult:
    """One check result for the run: passed only if every day passed; failing days named."""
    failed = {day: text for day, (ok, text) in verdicts.items() if not ok}
    if len(verdicts) == 1:
        description = next(iter(verdicts.values()))[1]
    elif failed:
        description = "; ".join(f"{day}: {text}" for day, text in failed.items())
    else:
        description = f"All {len(verdicts)} partitions passed."
    return dg.AssetCheckResult(
        check_name=name, passed=not failed, description=description or None, **kwargs
    )


def per_partition(rows: Mapping[dt.date, Mapping[str, Any]]) -> dg.MetadataValue:
    """Per-day figures of a run, shown as a table in the UI."""
    return dg.MetadataValue.json({day.isoformat(): dict(values) for day, values in rows.items()})


@dataclass
class Stopwatch:
    """Measures a step and renders the standard throughput metadata."""

    started: float = field(default_factory=time.perf_counter)

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def metadata(self, rows: int) -> dict[str, dg.MetadataValue]:
        seconds = self.seconds
        return {
            "dagster/row_count": dg.MetadataValue.int(rows),
            "seconds": dg.MetadataValue.float(round(seconds, 3)),
            "rows_per_second": dg.MetadataValue.float(round(rows / seconds, 1) if seconds else 0),
        }
