"""How figures are shown in the Dagster UI: column schemas and table URIs, identifiers as text
(not plotted), a partition's score distribution as one histogram, links to the MLflow UI."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg
import numpy as np
import pyarrow as pa

from batch_inference_platform.lib.scoring.outputs import OutputKind, OutputSpec
from batch_inference_platform.lib.scoring.stats import ScoreStats

URI = "dagster/uri"
COLUMN_SCHEMA = "dagster/column_schema"
HISTOGRAM_BINS = 10
BAR_WIDTH = 30


def table(uri: str, schema: pa.Schema | None = None) -> dict[str, dg.MetadataValue]:
    """A Delta table's URI and, when known, its columns (``dagster/column_schema``)."""
    values: dict[str, dg.MetadataValue] = {URI: dg.MetadataValue.path(uri)}
    if schema is not None:
        values[COLUMN_SCHEMA] = dg.MetadataValue.table_schema(column_schema(schema))
    return values


def column_schema(schema: pa.Schema) -> dg.TableSchema:
    """The Arrow schema as Dagster's column schema (type and nullability of each column)."""
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=f.name,
                type=str(f.type),
                constraints=dg.TableColumnConstraints(nullable=f.nullable),
            )
            for f in schema
        ]
    )


def identifier(value: object) -> dg.MetadataValue:
    """A version number or id shown as text: the UI plots numbers, and an id is no measurement."""
    return dg.MetadataValue.text(str(value))


def link(url: str) -> dg.MetadataValue:
    """An http(s) link when ``url`` is one, else plain text (a ``models:/`` URI opens nothing)."""
    if url.startswith(("http://", "https://")):
        return dg.MetadataValue.url(url)
    return dg.MetadataValue.text(url)


def histogram(stats: ScoreStats, output: OutputSpec) -> str:
    """One partition's predictions as a markdown histogram: label counts for labels; otherwise
    the primary score (the probability, the top class's probability, or the value) in
    ``HISTOGRAM_BINS`` equal bins - over [0, 1] for probabilities, over the observed range
    (from a uniform sample) for values."""
    if output.kind is OutputKind.LABEL or (not stats.histogram.total and stats.labels):
        counts = dict(sorted(stats.labels.items(), key=lambda item: -item[1]))
        return _bars("label", list(counts), list(counts.values()))
    if not stats.histogram.total:
        return "No scores."
    if output.is_probability and stats.min_score >= 0 and stats.max_score <= 1:
        counts = stats.histogram.coarse(HISTOGRAM_BINS)
        edges = np.linspace(0.0, 1.0, HISTOGRAM_BINS + 1)
        top_class = output.kind is OutputKind.CLASS_PROBABILITIES
        title = "top-class probability" if top_class else "score"
    else:
        low, high = stats.min_score, stats.max_score
        if high <= low:
            high = low + 1.0
        counts, edges = np.histogram(stats.sample, bins=HISTOGRAM_BINS, range=(low, high))
        title = f"value (uniform sample of {stats.sample.size:,} rows)"
    ranges = [f"{edges[i]:.4g} - {edges[i + 1]:.4g}" for i in range(len(counts))]
    return _bars(title, ranges, [int(c) for c in counts])


def _bars(title: str, names: Sequence[str], counts: Sequence[int]) -> str:
    total = sum(counts) or 1
    top = max(counts, default=0) or 1
    lines = [f"| {title} | rows | share | |", "|---|---:|---:|---|"]
    for name, count in zip(names, counts, strict=True):
        bar = "█" * round(BAR_WIDTH * count / top)
        lines.append(f"| {name} | {count:,} | {count / total:.1%} | {bar} |")
    return "\n".join(lines)


def entries_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> dg.MetadataValue:
    """Rows (dicts) as a UI table with ``columns`` (values as text; missing ones empty)."""
    schema = dg.TableSchema(columns=[dg.TableColumn(name=c, type="string") for c in columns])
    records = [
        dg.TableRecord({c: "" if row.get(c) is None else str(row.get(c)) for c in columns})
        for row in rows
    ]
    return dg.MetadataValue.table(records, schema=schema)
