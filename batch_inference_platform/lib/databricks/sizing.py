"""Cluster sizing from history (the seed's auto optimizer): workers that finish a run within
the target duration, from the throughput per worker that earlier runs achieved."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass


@dataclass(frozen=True)
class PastRun:
    """What an earlier Databricks scoring run did."""

    rows: int
    seconds: float
    workers: int

    @property
    def rows_per_worker_second(self) -> float:
        return self.rows / (self.seconds * self.workers)


@dataclass(frozen=True)
class SizingAdvice:
    """The recommended workers and why."""

    workers: int
    rows_per_worker_second: float | None
    expected_seconds: float | None
    basis: str


def recommend_workers(
    history: list[PastRun],
    rows: int,
    *,
    target_seconds: float,
    min_workers: int,
    max_workers: int,
) -> SizingAdvice:
    """Workers to score ``rows`` within ``target_seconds``, clamped to [min, max].

    Without usable history the maximum is used (finish first, learn the rate from this run).
    The rate is the median of past runs' rows per worker-second, robust to one slow run.
    """
    usable = [run for run in history if run.rows > 0 and run.seconds > 0 and run.workers > 0]
    if not usable:
        return SizingAdvice(max_workers, None, None, "no history yet: using max-workers")
    rate = statistics.median(run.rows_per_worker_second for run in usable)
    needed = math.ceil(rows / (rate * target_seconds)) if rows else min_workers
    workers = min(max_workers, max(min_workers, needed))
    return SizingAdvice(
        workers=workers,
        rows_per_worker_second=rate,
        expected_seconds=rows / (rate * workers),
        basis=f"median of {len(usable)} earlier runs: {rate:,.0f} rows per worker-second; "
        f"{rows:,} rows in {target_seconds:,.0f} s needs {needed} workers",
    )
