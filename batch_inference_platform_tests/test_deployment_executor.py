"""Every job runs its steps in the run's process: a launched run imports the
platform once (its run worker), not once more per step (docs/performance.md "Launched runs")."""

from __future__ import annotations

import dagster as dg

from batch_inference_platform.config import load_settings
from batch_inference_platform.definitions import build_definitions

JOBS = ("score_partition_job", "rescore_job", "generate_features_job", "train_demo_model_job")


def test_every_deployment_job_executes_in_process() -> None:
    defs = build_definitions(load_settings(environ={}))
    for deployment in ("credit_risk", "churn"):
        for name in JOBS:
            job = defs.resolve_job_def(f"{deployment}__{name}")
            assert job.executor_def is dg.in_process_executor, job.name


def test_every_platform_job_executes_in_process() -> None:
    """The platform's own jobs (client requests, real-time insights, SLA report, lake upkeep)
    too: none starts a fresh Python per step."""
    defs = build_definitions(load_settings(environ={}))
    jobs = [job for job in defs.resolve_all_job_defs() if not job.name.startswith("__")]
    assert {job.name for job in jobs} >= {"client_inference_job", "sla_report_job"}
    slow = [job.name for job in jobs if job.executor_def is not dg.in_process_executor]
    assert slow == []
