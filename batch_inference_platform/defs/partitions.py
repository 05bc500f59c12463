"""The daily partitioning every dated asset shares, and small helpers around it."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field

import dagster as dg

from batch_inference_platform.config import load_settings

DAILY_PARTITIONS = dg.DailyPartitionsDefinition(
    start_date=load_settings().application.partitions.start_date.isoformat()
)
"""One partition per calendar day (UTC) of feature data, from the configured start date."""


def partition_day(context: dg.AssetExecutionContext) -> dt.date:
    """The calendar day of the partition being materialized."""
    return dt.date.fromisoformat(context.partition_key)


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
