"""A deployment's jobs (score, re-score, generate, train) and its schedule."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

import dagster as dg

from batch_inference_platform.defs.scope import DeploymentScope
from batch_inference_platform.lib.deployments.partitioning import PartitionKind
from batch_inference_platform.lib.quartz import quartz_to_cron

if TYPE_CHECKING:  # the class dg.define_asset_job returns (not exported by dagster)
    from dagster._core.definitions.unresolved_asset_job_definition import (
        UnresolvedAssetJobDefinition as AssetJob,
    )


@dataclass(frozen=True)
class DeploymentJobs:
    """The jobs people and sensors launch for one deployment."""

    score: AssetJob
    rescore: AssetJob
    generate: AssetJob | None
    train: AssetJob | None

    @property
    def all(self) -> list[AssetJob]:
        return [job for job in (self.score, self.rescore, self.generate, self.train) if job]


DEPLOYMENT_EXECUTOR = dg.in_process_executor
"""How a deployment job's steps run: one after another in the run's own process.

A partition's graph is a chain (validate -> model -> score -> catalog -> archive) and one run
covers a range, so its steps never run side by side. Dagster's default multiprocess executor
starts a fresh Python per step, each importing the platform again (9-17 s per step on two busy
cores); a forkserver preloading the definitions pays that import once more per run and then
forks a process whose delta-rs (tokio) runtime panics. In process, a launched run pays the
import once (its run worker), steps start in under a second, and the scoring step keeps the
model ``model_versions`` loaded. Measured: docs/performance.md "Launched runs"."""


def build_jobs(scope: DeploymentScope, *, generated: bool) -> DeploymentJobs:
    """``<name>__score_partition_job`` and friends, over the deployment's partitions (Dagster
    takes them from the selected assets); each runs its steps in the run's process
    (``DEPLOYMENT_EXECUTOR``)."""
    name = scope.name
    score_keys = [scope.validated, scope.model_versions, scope.predictions, scope.catalog]
    if scope.deployment.partitioning.partitioned:
        score_keys.append(scope.archive)
    return DeploymentJobs(
        score=dg.define_asset_job(
            scope.job_name("score_partition_job"),
            selection=dg.AssetSelection.assets(*score_keys),
            executor_def=DEPLOYMENT_EXECUTOR,
            description=f"{name}: validate, resolve the serving model, score, catalog and "
            "archive one partition.",
        ),
        rescore=dg.define_asset_job(
            scope.job_name("rescore_job"),
            selection=dg.AssetSelection.assets(
                scope.model_versions, scope.predictions, scope.catalog
            ),
            executor_def=DEPLOYMENT_EXECUTOR,
            description=f"{name}: re-score already validated partitions with the serving model "
            "(after a promotion); one run covers a range and loads the model once.",
        ),
        generate=dg.define_asset_job(
            scope.job_name("generate_features_job"),
            selection=dg.AssetSelection.assets(scope.features),
            executor_def=DEPLOYMENT_EXECUTOR,
            description=f"Locally: generate {name}'s synthetic features for a partition.",
        )
        if generated
        else None,
        train=dg.define_asset_job(
            scope.job_name("train_demo_model_job"),
            selection=dg.AssetSelection.assets(scope.demo_model),
            executor_def=DEPLOYMENT_EXECUTOR,
            description=f"Locally: train {name}'s demo model and give it the serving alias.",
        )
        if generated
        else None,
    )


def build_scoring_schedule(
    scope: DeploymentScope, job: AssetJob, quartz: str
) -> dg.ScheduleDefinition:
    """Score the latest complete partition on the Quartz schedule ``quartz``; one run per
    partition however often it ticks (the run key is the partition)."""
    partitioning = scope.deployment.partitioning

    @dg.schedule(
        name=scope.job_name("score_latest_partition_schedule"),
        cron_schedule=quartz_to_cron(quartz),
        job=job,
        execution_timezone="UTC",
        description=f"{scope.name}: scores the most recent complete partition ({quartz}).",
    )
    def score_latest_partition(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        now = (context.scheduled_execution_time or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
        if partitioning.kind is PartitionKind.NONE:
            return dg.RunRequest(run_key=now.strftime("%Y-%m-%dT%H:%M"))
        if partitioning.kind is PartitionKind.HOURLY:
            previous = now.replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=1)
            key = partitioning.key_of(previous)
        else:
            key = (now - dt.timedelta(days=1)).date().isoformat()
        return dg.RunRequest(run_key=key, partition_key=key)

    return score_latest_partition
