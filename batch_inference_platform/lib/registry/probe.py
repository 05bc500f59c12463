"""Vetting a candidate version for one use case before it serves: the smoke test on the exact
scorer that would serve, then its fit to the tables it reads and writes.

``model_versions`` and the real-time insights resolve the serving version with the same probe,
so a version refused for batch scoring never serves anywhere else.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa

from batch_inference_platform.lib.registry.client import ModelVersionInfo
from batch_inference_platform.lib.registry.loader import ServingScorer
from batch_inference_platform.lib.registry.smoke import SmokeResult, smoke_test
from batch_inference_platform.lib.scoring.kernel import PROVENANCE_FIELDS
from batch_inference_platform.lib.scoring.outputs import OutputSpec


@dataclass
class ServingProbe:
    """A ``Probe`` for ``resolve_serving_version`` that keeps each version's smoke result."""

    load: Callable[[ModelVersionInfo], ServingScorer]
    """The scorer that would serve the version (bound to the output, compiled if possible)."""
    sample: pa.RecordBatch
    """Validated rows the version must score."""
    validated: pa.Schema
    max_load_seconds: float
    predictions: pa.Schema | None = None
    """The existing prediction table's schema (None: not written yet)."""
    results: dict[int, SmokeResult] = field(default_factory=dict)
    scorers: dict[int, ServingScorer] = field(default_factory=dict)

    def __call__(self, version: ModelVersionInfo) -> list[str]:
        def load() -> ServingScorer:
            self.scorers[version.version] = scorer = self.load(version)
            return scorer

        result = smoke_test(load, self.sample, max_load_seconds=self.max_load_seconds)
        self.results[version.version] = result
        problems = [f"smoke test: {problem}" for problem in result.problems]
        if problems:
            return problems
        scorer = self.scorers[version.version]
        return nullable_integer_problems(scorer, self.validated) + output_table_problems(
            scorer.output, self.predictions, self.validated
        )


def nullable_integer_problems(scorer: ServingScorer, validated: pa.Schema) -> list[str]:
    """A pyfunc enforces its signature: a ``long``/``integer`` input fed from a column that may
    hold nulls fails mid-run on the first null (MLflow refuses NaN in integer columns)."""
    if scorer.loaded.flavor != "pyfunc":
        return []
    problems = []
    for column in scorer.inputs.columns:
        index = validated.get_field_index(column.name)
        if column.type in ("long", "integer") and index >= 0 and validated.field(index).nullable:
            problems.append(
                f"input {column.name!r} is declared {column.type} but the table's column may be "
                "null, which MLflow's schema enforcement refuses: declare it double"
            )
    return problems


def output_table_problems(
    output: OutputSpec, existing: pa.Schema | None, validated: pa.Schema
) -> list[str]:
    """A version whose output columns differ from the prediction table's (another class set or
    kind) would fail every partition's commit: refuse it up front. The table's other columns
    (the deployment's keys and partition column, provenance) are not the model's to choose."""
    if existing is None:
        return []
    others = {f.name for f in PROVENANCE_FIELDS} | set(validated.names)
    wanted = {f.name: f.type for f in output.fields}
    have = {f.name: f.type for f in existing if f.name not in others}
    if wanted == have:
        return []
    return [
        f"its output columns {sorted(wanted)} differ from the prediction table's {sorted(have)} "
        "(another class set or output kind): write it to a new table or migrate the table"
    ]
