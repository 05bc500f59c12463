"""``make bench ROWS=N``: every way scores the same partition with the same models, side by side.

Each way runs in its own process (for its own peak RSS), one after another; the table gives
seconds, rows/s, peak RSS and the ratios to ``raw`` (the model library's ceiling), ``naive``
and ``spark_udf``. Every way's scores for a fixed sample of customers must agree: with ``raw``
when it reads float64 input (DataFrame models such as ``skpipe``), else with the first of
naive/engine/spark_udf/dagster.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.workspace import MODELS, prepare

WAYS = ("raw", "naive", "spark_udf", "engine", "spark_job", "dagster", "launched")
AGREEMENT = 1e-9
"""Largest score difference tolerated between ways that read float64 features."""
EXACT_WAYS = ("naive", "engine", "spark_udf", "spark_job", "dagster", "launched")
TARGETS = {"skpipe": {"raw": 0.9, "naive": 2.0}}
"""Model -> the engine's target throughput as a multiple of other ways' (printed, not enforced)."""
RESULTS = Path(__file__).parent / "results"
LAUNCH_BUDGET = 10.0
"""Seconds a launched run may take beyond the engine's (issue 14; printed, not enforced)."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--ways", default=",".join(WAYS), help="comma-separated subset")
    parser.add_argument("--models", default=",".join(MODELS), help=",".join(MODELS))
    parser.add_argument("--workdir", type=Path, default=Path("data/bench"))
    args = parser.parse_args()
    ways = [w for w in args.ways.split(",") if w]
    models = [m for m in args.models.split(",") if m]
    space = prepare(args.workdir.resolve() / f"rows_{args.rows}", args.rows)
    if {"engine", "dagster", "launched"} & set(ways):
        for model in models:  # warm the compiled-model cache once, outside the timings
            _run_way("compile", model, space.root)

    results: list[dict[str, Any]] = []
    for model in models:
        for way in ways:
            result = _run_way(way, model, space.root)
            results.append({"way": way, "model": model, **result})
            print(
                f"  {model:6} {way:9} {result['rows']:>11,} rows {result['seconds']:8.2f}s",
                flush=True,
            )
    problems = _disagreements(results)
    _print_table(results, args.rows)
    for problem in problems:
        print(f"SCORES DISAGREE: {problem}")
    _save(results, args.rows)
    return 1 if problems else 0


def _run_way(way: str, model: str, root: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.ways", way, model, str(root)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"{way}/{model} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    result = json.loads(line.removeprefix("RESULT "))
    result["rows_per_s"] = result["rows"] / result["seconds"] if result["seconds"] else 0.0
    return result


def _float32(result: dict[str, Any]) -> bool:
    """Whether the way read float32 features (``raw`` on a matrix model): thresholds that fall
    between a value's float32 and float64 roundings flip, so its difference is reported, not
    required to vanish."""
    return bool(result.get("float32_input", False))


def _disagreements(results: list[dict[str, Any]]) -> list[str]:
    problems = []
    for model in {r["model"] for r in results}:
        by_way = {r["way"]: r for r in results if r["model"] == model}
        exact = [w for w in ("raw", *EXACT_WAYS) if w in by_way and not _float32(by_way[w])]
        reference = by_way[exact[0]] if exact else next(iter(by_way.values()))
        for way, result in by_way.items():
            result["reference"] = reference["way"]
            sample, expected = result["sample"], set(reference["sample"])
            # A way that validates (launched) leaves out the rows its validation quarantined
            # (dirty rows, and all but one row of a duplicated key): a sampled customer with a
            # quarantined row is compared on presence only.
            quarantined = set(result.get("quarantined_sample", []))
            missing = expected - set(sample) - quarantined
            worst = max(
                (
                    abs(v - reference["sample"][k])
                    for k, v in sample.items()
                    if k in expected and k not in quarantined
                ),
                default=0.0,
            )
            result["max_abs_diff_vs_reference"] = worst
            if missing or not set(sample) <= expected:
                problems.append(f"{model}/{way}: sampled customers differ")
            elif worst > AGREEMENT and not _float32(result):
                problems.append(
                    f"{model}/{way}: max |diff| {worst:.3g} vs {reference['way']} on the sample"
                )
    return problems


def _print_table(results: list[dict[str, Any]], rows: int) -> None:
    print(
        f"\n{rows:,} rows; lgbm/hgb: 30 numeric features, skpipe: 30 numeric + 4 string; "
        f"{os.cpu_count()} cores; "
        f"{platform.processor() or platform.machine()}; Python {platform.python_version()}"
    )
    header = (
        f"{'way':10} {'model':6} {'rows':>11} {'seconds':>9} {'rows/s':>11} "
        f"{'peak MB':>8} {'x raw':>6} {'x naive':>7} {'x spark':>8}  notes"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        base = {w["way"]: w["rows_per_s"] for w in results if w["model"] == r["model"]}
        ratios = [
            r["rows_per_s"] / base[way] if base.get(way) else float("nan")
            for way in ("raw", "naive", "spark_udf")
        ]
        notes = []
        if "startup_seconds" in r:
            notes.append(f"start-up {r['startup_seconds']:.1f}s apart")
        if r["way"] == "raw":
            notes.append("float32 matrix" if _float32(r) else "float64 DataFrame")
        if "quarantined" in r:
            notes.append(f"validated: {r['quarantined']:,} rows quarantined")
        if r["way"] != r["reference"]:
            notes.append(f"max |diff| vs {r['reference']} {r['max_abs_diff_vs_reference']:.2g}")
        if "compile_seconds" in r:
            if r["scoring_engine"].startswith("native"):
                notes.append(f"{r['scoring_engine']} (not compiled)")
            else:
                notes.append(f"{r['scoring_engine']} compiled once in {r['compile_seconds']:.1f}s")
        print(
            f"{r['way']:10} {r['model']:6} {r['rows']:>11,} {r['seconds']:>9.2f} "
            f"{r['rows_per_s']:>11,.0f} {r['peak_rss_mb']:>8,.0f} {ratios[0]:>6.2f} "
            f"{ratios[1]:>7.2f} {ratios[2]:>8.2f}  {'; '.join(notes)}"
        )
    dagster = {r["model"]: r["seconds"] for r in results if r["way"] == "dagster"}
    engine = {r["model"]: r for r in results if r["way"] == "engine"}
    for model in sorted(set(dagster) & set(engine)):
        overhead = dagster[model] - engine[model]["seconds"]
        print(f"dagster - engine ({model}): {overhead:.2f}s of run overhead")
    launched = {r["model"]: r for r in results if r["way"] == "launched"}
    for model in sorted(set(launched) & set(engine)):
        run, base = launched[model], engine[model]["seconds"]
        overhead = run["seconds"] - base
        verdict = "met" if overhead <= LAUNCH_BUDGET else "MISSED"
        print(
            f"launched / engine ({model}): {run['seconds']:.2f}s / {base:.2f}s = "
            f"{run['seconds'] / base:.2f}x; {overhead:.2f}s more, queued to success "
            f"(target <= {LAUNCH_BUDGET:.0f}s more: {verdict})"
        )
        phase = run["phases"]
        launch = sum(phase[k] for k in ("queue", "worker_start", "step_starts", "run_end"))
        print(
            f"  of which {launch:.2f}s launching (queue, run worker, step starts, run end) "
            f"and {phase['steps']:.2f}s in the graph's steps (engine: scoring only)"
        )
        phases = ", ".join(f"{k} {v:.2f}s" for k, v in phase.items())
        steps = ", ".join(f"{k.rsplit('__', 1)[-1]} {v:.2f}s" for k, v in run["steps"].items())
        print(f"  launched phases: {phases}\n  launched steps: {steps}")
    for model, targets in TARGETS.items():
        if model not in engine:
            continue
        base = {r["way"]: r["rows_per_s"] for r in results if r["model"] == model}
        for way, target in targets.items():
            if not base.get(way):
                continue
            ratio = engine[model]["rows_per_s"] / base[way]
            verdict = "met" if ratio >= target else "MISSED"
            print(
                f"engine / {way} ({model}): {engine[model]['rows_per_s']:,.0f} / "
                f"{base[way]:,.0f} rows/s = {ratio:.2f}x (target >= {target}x: {verdict})"
            )


def _save(results: list[dict[str, Any]], rows: int) -> None:
    RESULTS.mkdir(exist_ok=True)
    keep = ("way", "model", "rows", "seconds", "rows_per_s", "peak_rss_mb")
    payload = {
        "rows": rows,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "results": [{k: r[k] for k in keep} for r in results],
        "details": [{k: v for k, v in r.items() if k != "sample"} for r in results],
    }
    (RESULTS / "latest.json").write_text(json.dumps(payload, indent=2))
    (RESULTS / f"rows_{rows}.json").write_text(json.dumps(payload, indent=2))
    print(f"\nwrote {RESULTS / 'latest.json'}")


if __name__ == "__main__":
    sys.exit(main())
