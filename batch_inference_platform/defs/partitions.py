"""Helpers every partitioned asset shares: per-partition check verdicts and figures."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import dagster as dg


def combine_checks(
    name: str, verdicts: Mapping[str, tuple[bool, str]], **kwargs: Any
) -> dg.AssetCheckResult:
    """One check result for the run: passed only if every partition passed; failures named."""
    failed = {key: text for key, (ok, text) in verdicts.items() if not ok}
    if len(verdicts) == 1:
        description = next(iter(verdicts.values()))[1]
    elif failed:
        description = "; ".join(f"{key}: {text}" for key, text in failed.items())
    else:
        description = f"All {len(verdicts)} partitions passed."
    return dg.AssetCheckResult(
        check_name=name, passed=not failed, description=description or None, **kwargs
    )


def per_partition(rows: Mapping[str, Mapping[str, Any]]) -> dg.MetadataValue:
    """Per-partition figures of a run, shown as a table in the UI."""
    return dg.MetadataValue.json({key: dict(values) for key, values in rows.items()})


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
