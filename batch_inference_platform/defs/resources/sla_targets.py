"""``sla_targets``: the SLA targets (``performance.sla-targets`` in monitoring.yml) the SLA
report measures the scoring runs against (``defs/monitoring/sla.py``)."""

import datetime as dt

import dagster as dg
import pydantic

from batch_inference_platform.defs.resources.client_requests import CLIENT_JOB
from batch_inference_platform.lib.sla import JobCompletionTarget, SlaTargets


class SlaTargetsResource(dg.ConfigurableResource):
    """The SLA targets (``performance.sla-targets``), the window they are measured over and
    the jobs that count as scoring besides every deployment's scoring jobs."""

    job_completion_quantile: float = pydantic.Field(ge=0, le=1)
    """Share of runs that must succeed within ``job_completion_within_seconds``."""
    job_completion_within_seconds: float = pydantic.Field(gt=0)
    data_throughput_per_hour: float = pydantic.Field(gt=0)
    """Records scored per hour of run time, at least."""
    error_rate: float = pydantic.Field(ge=0, le=1)
    """Failed records / all records, below this."""
    window_days: float = pydantic.Field(default=7.0, gt=0)
    scoring_jobs: list[str] = pydantic.Field(default_factory=lambda: [CLIENT_JOB])
    """Jobs whose runs count as scoring, besides ``<name>__score_partition_job`` and
    ``<name>__rescore_job`` of every deployment."""

    @property
    def targets(self) -> SlaTargets:
        return SlaTargets(
            job_completion=JobCompletionTarget(
                quantile=self.job_completion_quantile,
                within=dt.timedelta(seconds=self.job_completion_within_seconds),
            ),
            data_throughput=self.data_throughput_per_hour,
            error_rate=self.error_rate,
        )

    @property
    def window(self) -> dt.timedelta:
        return dt.timedelta(days=self.window_days)
