"""``telemetry``: where run telemetry goes and how often metrics are collected
(monitoring.yml)."""

import datetime as dt
import threading
from pathlib import Path

import dagster as dg

from batch_inference_platform.lib.telemetry import Telemetry, configure

_providers: dict[tuple[float, str], Telemetry] = {}
_lock = threading.Lock()


class TelemetryResource(dg.ConfigurableResource):
    """Where run telemetry goes and how often metrics are collected (monitoring.yml)."""

    collection_interval_seconds: float
    local_dir: str
    """JSON-lines destination when APPLICATIONINSIGHTS_CONNECTION_STRING is not set."""

    def telemetry(self) -> Telemetry:
        """One provider per process (exporters keep threads and connections)."""
        key = (self.collection_interval_seconds, self.local_dir)
        with _lock:
            if key not in _providers:
                _providers[key] = configure(
                    interval=dt.timedelta(seconds=self.collection_interval_seconds),
                    local_dir=Path(self.local_dir),
                )
            return _providers[key]
