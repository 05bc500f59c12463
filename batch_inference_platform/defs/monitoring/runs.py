"""What monitoring reads of a finished run: its materializations, the rows it scored per
deployment (from the records its materializations carry, ``defs/metadata.py``), and the
deployment it belongs to."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

import dagster as dg

from batch_inference_platform.defs.metadata import (
    PredictionsMetadata,
    TenantOutputMetadata,
    scored_record,
)
from batch_inference_platform.lib.deployments.spec import NAME_PATTERN

DEPLOYMENT_TAG = "deployment"
"""Set by the model update sensor on the re-score runs it requests."""
TENANTS = "tenants"
"""The label of rows scored by client jobs for tenants (no deployment of their own)."""
PREDICTIONS = "predictions"
"""The last part of a deployment's predictions key, ``<name>/predictions``."""
SCORING_JOBS = ("score_partition_job", "rescore_job")
"""A deployment's scoring jobs are ``<name>__<one of these>``."""
_NAME = re.compile(NAME_PATTERN)


def run_materializations(
    instance: dg.DagsterInstance, run_id: str
) -> list[dg.AssetMaterialization]:
    """Every asset materialization the run recorded, in order."""
    records = instance.get_records_for_run(
        run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION
    ).records
    return [r.asset_materialization for r in records if r.asset_materialization is not None]


def label_of(record: PredictionsMetadata | TenantOutputMetadata) -> str:
    """Whose rows a record counts: its deployment, or ``tenants`` for a tenant's table."""
    if isinstance(record, PredictionsMetadata):
        return record.deployment
    return record.deployment or TENANTS


def scored_rows(materializations: Iterable[dg.AssetMaterialization]) -> dict[str, int]:
    """Rows scored per deployment (``tenants`` for client jobs' tables) by the
    materializations carrying a predictions or tenant-output record: once per asset and
    partition (the latest), a partition's own rows when the record has them."""
    latest: dict[tuple[dg.AssetKey, str | None], tuple[str, int]] = {}
    for materialization in materializations:
        record = scored_record(materialization)
        if record is None:
            continue
        partition = materialization.partition
        rows = record.rows_of(partition) if isinstance(record, PredictionsMetadata) else record.rows
        latest[(materialization.asset_key, partition)] = (label_of(record), rows)
    totals: dict[str, int] = {}
    for label, rows in latest.values():
        totals[label] = totals.get(label, 0) + rows
    return totals


def deployment_of_job(job_name: str) -> str | None:
    """``credit_risk`` of ``credit_risk__score_partition_job`` (any ``<name>__<job>``)."""
    name, separator, job = job_name.rpartition("__")
    return name if separator and job and _NAME.match(name) else None


def is_deployment_scoring_job(job_name: str) -> bool:
    """A deployment's ``<name>__score_partition_job`` or ``<name>__rescore_job``."""
    return deployment_of_job(job_name) is not None and job_name.rpartition("__")[2] in SCORING_JOBS


def planned_predictions(keys: Iterable[dg.AssetKey]) -> str | None:
    """The deployment whose ``<name>/predictions`` (``DeploymentScope.predictions``) a run
    planned to materialize, if one's: for runs that recorded nothing (failed before their
    first commit), whose plan is all there is to tell they were scoring."""
    names = {
        key.path[0]
        for key in keys
        if len(key.path) == 2 and key.path[1] == PREDICTIONS and _NAME.match(key.path[0])
    }
    return names.pop() if len(names) == 1 else None


def deployment_of_keys(keys: Iterable[dg.AssetKey]) -> str | None:
    """The deployment whose assets (``<name>/<asset>``) these are, if they are one's only."""
    names = {
        key.path[0]
        for key in keys
        if len(key.path) == 2 and key.path[0] != TENANTS and _NAME.match(key.path[0])
    }
    return names.pop() if len(names) == 1 else None


def run_deployment(
    run: dg.DagsterRun,
    *,
    scored: Mapping[str, int] | None = None,
    asset_keys: Sequence[dg.AssetKey] = (),
) -> str | None:
    """The deployment a run belongs to: its ``deployment`` tag, else its job's ``<name>__``
    prefix, else the one deployment it scored rows of, else the one whose assets
    ``asset_keys`` (what it materialized or planned to) are; None when not one deployment's."""
    tagged = run.tags.get(DEPLOYMENT_TAG)
    if tagged:
        return tagged
    from_job = deployment_of_job(run.job_name)
    if from_job is not None:
        return from_job
    deployments = [label for label in scored or {} if label != TENANTS]
    if len(deployments) == 1:
        return deployments[0]
    return deployment_of_keys(asset_keys)


def planned_asset_keys(instance: dg.DagsterInstance, run: dg.DagsterRun) -> list[dg.AssetKey]:
    """The assets a run set out to materialize: its asset selection, else those of its
    execution plan (empty for op jobs)."""
    if run.asset_selection:
        return sorted(run.asset_selection, key=lambda key: key.to_user_string())
    if run.execution_plan_snapshot_id is None:
        return []
    plan = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
    keys = {
        output.properties.asset_key
        for step in plan.steps
        for output in step.outputs
        if output.properties is not None and output.properties.asset_key is not None
    }
    return sorted(keys, key=lambda key: key.to_user_string())
