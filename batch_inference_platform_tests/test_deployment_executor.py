"""A deployment's jobs run their steps in the run's process: a launched run imports the
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
