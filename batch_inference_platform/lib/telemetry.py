"""OpenTelemetry metrics and traces of every run: rows, duration, throughput, records per hour
and errors, each with the run's ``deployment`` attribute (rows and throughput per deployment
the run scored, when it scored several). Exported to Azure Monitor (Application Insights) when
``APPLICATIONINSIGHTS_CONNECTION_STRING`` is set, otherwise to JSON-lines files (a local
exporter any collector can tail); collected every ``metrics.collection-interval``."""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

CONNECTION_STRING_ENV = "APPLICATIONINSIGHTS_CONNECTION_STRING"
SERVICE_NAME = "batch_inference_platform"
DEPLOYMENT = "deployment"
"""The attribute naming the deployment a metric point is about."""


class JsonLinesMetricExporter(MetricExporter):
    """Appends each export as one JSON line to ``path``."""

    def __init__(self, path: Path) -> None:
        super().__init__(preferred_temporality={})
        self.path = path
        self._lock = threading.Lock()

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: object
    ) -> MetricExportResult:
        line = json.dumps(json.loads(metrics_data.to_json()), separators=(",", ":"))
        with self._lock, self.path.open("a", encoding="utf-8") as out:
            out.write(line + "\n")
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: object) -> None:
        return None


class JsonLinesSpanExporter(SpanExporter):
    """Appends each finished span as one JSON line to ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock, self.path.open("a", encoding="utf-8") as out:
            for span in spans:
                out.write(json.dumps(json.loads(span.to_json()), separators=(",", ":")) + "\n")
        return SpanExportResult.SUCCESS


@dataclass(frozen=True)
class RunFigures:
    """What one finished run did: the rows it scored of each deployment (``tenants`` for
    client jobs), and the deployment it belongs to (None: not a deployment's run)."""

    job: str
    run_id: str
    status: str
    start: dt.datetime
    end: dt.datetime
    errors: int
    attributes: Mapping[str, str]
    rows_by_deployment: Mapping[str, int] = field(default_factory=dict)
    deployment: str | None = None

    @property
    def rows(self) -> int:
        return sum(self.rows_by_deployment.values())

    @property
    def seconds(self) -> float:
        return max((self.end - self.start).total_seconds(), 1e-9)


class Telemetry:
    """The platform's meters and tracer, behind the exporter chosen at configuration."""

    def __init__(self, meters: MeterProvider, tracer: TracerProvider, destination: str) -> None:
        self.meters, self.tracer, self.destination = meters, tracer, destination
        meter = meters.get_meter(SERVICE_NAME)
        self._rows = meter.create_counter("bip.records.scored", unit="{record}")
        self._runs = meter.create_counter("bip.runs", unit="{run}")
        self._errors = meter.create_counter("bip.runs.failed", unit="{run}")
        self._duration = meter.create_histogram("bip.run.duration", unit="s")
        self._throughput = meter.create_histogram("bip.run.throughput", unit="{record}/s")
        self._hourly = meter.create_histogram("bip.run.records_per_hour", unit="{record}/h")

    def record_run(self, run: RunFigures) -> None:
        """Metrics and a span for one finished run, exported at once: runs, duration and
        errors with the run's deployment, rows and throughput with each deployment it scored."""
        attributes = {"job": run.job, "status": run.status, **run.attributes}
        if run.deployment:
            attributes[DEPLOYMENT] = run.deployment
        self._runs.add(1, attributes)
        self._duration.record(run.seconds, attributes)
        if run.errors:
            self._errors.add(run.errors, attributes)
        scored = run.rows_by_deployment or {run.deployment or "": 0}
        for deployment, rows in scored.items():
            per_deployment = {**attributes, DEPLOYMENT: deployment} if deployment else attributes
            self._rows.add(rows, per_deployment)
            self._throughput.record(rows / run.seconds, per_deployment)
            self._hourly.record(rows / run.seconds * 3600, per_deployment)
        span_attributes: dict[str, str | int | list[str]] = {
            **attributes,
            "run_id": run.run_id,
            "rows": run.rows,
            "deployments": sorted(run.rows_by_deployment),
        }
        span_attributes |= {f"rows.{d}": n for d, n in run.rows_by_deployment.items()}
        span = self.tracer.get_tracer(SERVICE_NAME).start_span(
            f"run {run.job}",
            start_time=int(run.start.timestamp() * 1e9),
            attributes=span_attributes,
        )
        span.end(end_time=int(run.end.timestamp() * 1e9))
        self.flush()

    def flush(self) -> None:
        self.meters.force_flush()
        self.tracer.force_flush()

    def shutdown(self) -> None:
        self.meters.shutdown()
        self.tracer.shutdown()


def configure(*, interval: dt.timedelta, local_dir: Path) -> Telemetry:
    """Azure Monitor when the connection string is set, JSON lines under ``local_dir`` else."""
    resource = Resource.create({"service.name": SERVICE_NAME})
    connection = os.environ.get(CONNECTION_STRING_ENV)
    if connection:
        from azure.monitor.opentelemetry.exporter import (
            AzureMonitorMetricExporter,
            AzureMonitorTraceExporter,
        )

        metrics: MetricExporter = AzureMonitorMetricExporter(connection_string=connection)
        spans: SpanExporter = AzureMonitorTraceExporter(connection_string=connection)
        destination = "azure-monitor"
    else:
        local_dir.mkdir(parents=True, exist_ok=True)
        metrics = JsonLinesMetricExporter(local_dir / "metrics.jsonl")
        spans = JsonLinesSpanExporter(local_dir / "spans.jsonl")
        destination = str(local_dir)
    reader = PeriodicExportingMetricReader(
        metrics, export_interval_millis=interval.total_seconds() * 1000
    )
    meters = MeterProvider(resource=resource, metric_readers=[reader])
    tracer = TracerProvider(resource=resource)
    tracer.add_span_processor(BatchSpanProcessor(spans))
    return Telemetry(meters, tracer, destination)


__all__ = ["RunFigures", "Telemetry", "configure"]
