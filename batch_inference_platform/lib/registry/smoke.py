"""The smoke test a model version passes before it serves: it loads in time and scores a sample
of validated rows into one finite number per row."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from batch_inference_platform.lib.scoring.kernel import Scorer


@dataclass(frozen=True)
class SmokeResult:
    """What the smoke test saw; the version may serve only if ``problems`` is empty."""

    rows: int
    load_seconds: float
    predict_seconds: float
    problems: list[str] = field(default_factory=list)


def smoke_test(
    load: Callable[[], Scorer], sample: np.ndarray, *, max_load_seconds: float
) -> SmokeResult:
    """Load a version with ``load`` and score ``sample`` (a validated feature matrix)."""
    started = time.perf_counter()
    try:
        scorer = load()
    except Exception as error:  # any load failure refuses the version, with its reason
        return SmokeResult(0, time.perf_counter() - started, 0.0, [f"does not load: {error}"])
    load_seconds = time.perf_counter() - started
    problems = []
    if load_seconds > max_load_seconds:
        problems.append(f"loads in {load_seconds:.1f} s, over the {max_load_seconds:g} s limit")
    rows = len(sample)
    if rows == 0:
        return SmokeResult(0, load_seconds, 0.0, [*problems, "no validated rows to score"])
    started = time.perf_counter()
    try:
        scores = np.asarray(scorer.predict(sample))
    except Exception as error:
        seconds = time.perf_counter() - started
        return SmokeResult(rows, load_seconds, seconds, [*problems, f"predict fails: {error}"])
    predict_seconds = time.perf_counter() - started
    if scores.shape != (rows,):
        problems.append(f"scores have shape {scores.shape} for {rows} rows, not ({rows},)")
    elif not np.issubdtype(scores.dtype, np.number):
        problems.append(f"scores are {scores.dtype}, not numbers")
    else:
        bad = int(np.count_nonzero(~np.isfinite(scores.astype(np.float64))))
        if bad:
            problems.append(f"{bad} of {rows} smoke scores are not finite")
    return SmokeResult(rows, load_seconds, predict_seconds, problems)
