"""The smoke test a model version passes before it serves: it loads in time, its output fits
the declared kind, and it scores a sample of validated rows into finite predictions of that
kind (probabilities in [0, 1], class probabilities summing to 1)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa

from batch_inference_platform.lib.registry.adapters import OutputMismatchError, PredictFailedError
from batch_inference_platform.lib.scoring.kernel import Scorer
from batch_inference_platform.lib.scoring.outputs import OutputSpec
from batch_inference_platform.lib.scoring.stats import ScoreStats


@dataclass(frozen=True)
class SmokeResult:
    """What the smoke test saw; the version may serve only if ``problems`` is empty."""

    rows: int
    load_seconds: float
    predict_seconds: float
    problems: list[str] = field(default_factory=list)
    output: OutputSpec | None = None
    """The output the version was bound to (None if it did not load or bind)."""


def smoke_test(
    load: Callable[[], Scorer], sample: pa.RecordBatch, *, max_load_seconds: float
) -> SmokeResult:
    """Load (and bind) a version with ``load`` and score ``sample`` (validated rows)."""
    started = time.perf_counter()
    try:
        scorer = load()
    except OutputMismatchError as error:
        return SmokeResult(0, time.perf_counter() - started, 0.0, [f"output: {error}"])
    except PredictFailedError as error:
        return SmokeResult(0, time.perf_counter() - started, 0.0, [f"predict fails: {error}"[:500]])
    except Exception as error:  # any load failure refuses the version, with its reason
        return SmokeResult(0, time.perf_counter() - started, 0.0, [_reason("does not load", error)])
    load_seconds = time.perf_counter() - started
    problems = []
    if load_seconds > max_load_seconds:
        problems.append(f"loads in {load_seconds:.1f} s, over the {max_load_seconds:g} s limit")
    rows = sample.num_rows
    if rows == 0:
        return SmokeResult(0, load_seconds, 0.0, [*problems, "no validated rows to score"])
    output = scorer.output
    started = time.perf_counter()
    try:
        arrays = output.arrays(scorer.predict(scorer.inputs.prepare(sample)), rows)
    except Exception as error:  # a model that raises is refused, with its error
        seconds = time.perf_counter() - started
        return SmokeResult(
            rows, load_seconds, seconds, [*problems, _reason("predict fails", error)], output
        )
    predict_seconds = time.perf_counter() - started
    stats = ScoreStats()
    names = [f.name for f in output.fields]
    stats.add(pa.RecordBatch.from_arrays(arrays, names=names), output)
    if stats.non_finite:
        problems.append(f"{stats.non_finite} of {rows} smoke predictions are null or not finite")
    if stats.out_of_range:
        problems.append(
            f"{stats.out_of_range} of {rows} smoke probabilities are outside [0, 1] "
            f"(min {stats.min_score:.4g}, max {stats.max_score:.4g}); this use case expects "
            f"{output.describe()}"
        )
    if stats.not_summing:
        problems.append(f"{stats.not_summing} of {rows} rows' class probabilities do not sum to 1")
    return SmokeResult(rows, load_seconds, predict_seconds, problems, output)


def _reason(what: str, error: BaseException) -> str:
    """``what: Type: message``, the message's first line, capped (it goes to MLflow tags)."""
    message = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{what}: {type(error).__name__}: {message}"[:500]
