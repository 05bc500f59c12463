"""Validated feature partitions: the contract enforced, bad rows quarantined, scoring gated."""

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
import pyarrow as pa

from batch_inference_platform.defs.partitions import Stopwatch, combine_checks, per_partition
from batch_inference_platform.defs.resources import (
    LakeResource,
    ModelRegistryResource,
    QualityPolicyResource,
)
from batch_inference_platform.defs.scope import DeploymentScope
from batch_inference_platform.lib.deployments.partitioning import WHOLE_TABLE
from batch_inference_platform.lib.deployments.spec import Deployment
from batch_inference_platform.lib.features.contract import Contract, columns_from_signature
from batch_inference_platform.lib.lake.errors import describe_error, error_summary
from batch_inference_platform.lib.lake.layout import DeploymentTables
from batch_inference_platform.lib.lake.tables import (
    Snapshot,
    TableNotFoundError,
    replace_partition,
    snapshot,
)
from batch_inference_platform.lib.quality.rules import canonical_schema
from batch_inference_platform.lib.quality.validation import (
    ROW_CHECKS,
    CheckOutcome,
    ValidationPolicy,
    judge,
    profile_partition,
    quarantined_rows,
    valid_rows,
)
from batch_inference_platform.lib.quality.verdicts import (
    ERROR,
    FAILED,
    FILES,
    PASSED,
    REASON,
    VALIDATION_ID,
    VERDICT,
)
from batch_inference_platform.lib.registry.client import ModelNotFoundError
from batch_inference_platform.lib.registry.compatibility import signature_inputs
from batch_inference_platform.lib.scoring.inputs import UnsupportedSignatureError

BLOCKING_CHECKS = ("schema_matches_contract", *ROW_CHECKS)


@dataclass(frozen=True)
class PartitionValidation:
    """One partition's verdict and what was written for it."""

    rows_in: int
    rows_quarantined: int
    outcomes: list[CheckOutcome]
    validated_rows: int | None
    """Rows committed to the validated table; None when the partition did not pass (its
    validated partition was emptied)."""
    delta_version: int | None
    files: int | None
    quarantine_delta_version: int | None
    error: str | None = None
    """Why the partition could not be validated (its features could not be read)."""
    error_files: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.error is None and all(o.passed for o in self.outcomes)


class _Unrecorded(Exception):
    """A day's validation failed and its outcome could not be committed either."""

    def __init__(self, key: str, error: BaseException) -> None:
        super().__init__(
            f"{error_summary(error)}; {key} is not scored until validated_features is "
            "materialized for it again"
        )


def build_validated_features(scope: DeploymentScope) -> dg.AssetsDefinition:
    """``<name>/validated_features``: the deployment's partitions checked against its contract."""
    deployment = scope.deployment

    @dg.asset(
        key=scope.validated,
        deps=[scope.features],
        partitions_def=scope.partitions_def,
        backfill_policy=scope.backfill_policy,
        group_name=scope.group,
        kinds={"deltalake"},
        description=f"{deployment.name}: feature partitions that meet the feature contract, "
        "compacted and in contract types; failing rows go to the quarantine table with their "
        "reasons. A partition that fails a blocking check, or whose features cannot be read, is "
        "not scored and does not replace the last version that passed (which is not scored "
        "either); each partition is validated on its own.",
        check_specs=[
            dg.AssetCheckSpec(name, asset=scope.validated, blocking=True)
            for name in BLOCKING_CHECKS
        ],
    )
    def validated_features(
        context: dg.AssetExecutionContext,
        lake: LakeResource,
        policy: QualityPolicyResource,
        registry: ModelRegistryResource,
    ) -> dg.MaterializeResult:
        return _validate(context, scope, lake, policy, registry)

    return validated_features


def _validate(
    context: dg.AssetExecutionContext,
    scope: DeploymentScope,
    lake: LakeResource,
    policy: QualityPolicyResource,
    registry: ModelRegistryResource,
) -> dg.MaterializeResult:
    deployment = scope.deployment
    keys = scope.partition_keys(context)
    watch = Stopwatch()
    tables = lake.layout.deployment(deployment)
    try:
        features = snapshot(tables.features, deployment.partitioning)
    except TableNotFoundError as error:
        raise dg.Failure(
            f"cannot validate: {error}; materialize {scope.features.to_user_string()} first"
        ) from error
    contract = contract_of(deployment, features.schema, registry)
    limits = policy.validation_for(deployment.checks)
    results: dict[str, PartitionValidation] = {}
    for key in keys:
        try:
            results[key] = _validate_day(context, features, tables, contract, key, limits)
        except _Unrecorded as error:
            _record_partial(context, scope, features, results)
            raise dg.Failure(
                description=f"validation of {key} failed and could not be recorded: {error}",
                metadata={"failed_partitions": [key]},
            ) from None
    for key, result in results.items():
        if result.error is not None:
            context.log.error(
                f"partition {key} could not be validated and is not scored: "
                + _report_line(key, result)
            )
        elif not result.passed:
            context.log.error(
                f"partition {key} failed validation and is not scored; its validated partition "
                "keeps the last version that passed (if any), which is not scored either: "
                + "; ".join(f"{o.name}: {o.description}" for o in result.outcomes if not o.passed)
            )
    errors = {key: r for key, r in results.items() if r.error is not None}
    scoring_follows = scope.predictions in context.job_def.asset_layer.executable_asset_keys
    if errors and not (scoring_follows and any(r.passed for r in results.values())):
        _record_partial(context, scope, features, results)
        raise _failure(results, errors)
    evaluated = {key: r for key, r in results.items() if r.error is None}
    return dg.MaterializeResult(
        metadata=_metadata(watch, features, tables, results),
        check_results=[_check(name, evaluated, errors) for name in BLOCKING_CHECKS],
    )


def contract_of(
    deployment: Deployment, source: pa.Schema, registry: ModelRegistryResource
) -> Contract:
    """The declared contract, or - when the deployment declares none - the inputs of the
    version the serving alias names (what that model promises to accept)."""
    if deployment.columns is not None:
        return deployment.contract(source)
    client = registry.registry
    try:
        holder = client.by_alias(deployment.model_name, deployment.alias)
        inputs = signature_inputs(client.signature(holder))
    except (ModelNotFoundError, UnsupportedSignatureError) as error:
        raise dg.Failure(
            f"{deployment.name} declares no contract, so its model's signature is the contract, "
            f"but: {error}"
        ) from error
    identity = set(deployment.identity)
    signature = {name: spec for name, spec in inputs.items() if name not in identity}
    return deployment.contract(source, columns_from_signature(signature))


def _validate_day(
    context: dg.AssetExecutionContext,
    features: Snapshot,
    tables: DeploymentTables,
    contract: Contract,
    key: str,
    policy: ValidationPolicy,
) -> PartitionValidation:
    """Profile, judge and write one partition: its quarantine, stamped with the verdict, then
    - only if it passed - its validated rows, stamped with the same validation id (a partition
    that fails keeps its last validated version, which is no longer scored). A partition whose
    features cannot be read gets an ``error`` verdict; the other days go on."""

    def source(columns: list[str] | None = None):
        return features.batches(key, columns=columns)

    stamp = {
        "dagster_run_id": context.run_id,
        "partition": key,
        "feature_table_version": str(features.version),
        VALIDATION_ID: uuid.uuid4().hex,
    }
    try:
        profile = profile_partition(source, features.schema, contract, key)
        outcomes = judge(profile, policy, contract)
        passed = all(o.passed for o in outcomes)
        reason = "; ".join(f"{o.name}: {o.description}" for o in outcomes if not o.passed)
        quarantine = replace_partition(
            tables.quarantine,
            contract.partitioning,
            key,
            [] if profile.schema_problems else quarantined_rows(source, contract, key, profile),
            canonical_schema(contract, with_reason=True),
            commit_metadata={**stamp, VERDICT: PASSED if passed else FAILED, REASON: reason},
        )
        if not passed:
            return PartitionValidation(
                profile.rows,
                profile.quarantined_rows,
                outcomes,
                None,
                None,
                None,
                quarantine.version,
            )
        validated = replace_partition(
            tables.validated,
            contract.partitioning,
            key,
            valid_rows(source, contract, key, profile),
            canonical_schema(contract),
            commit_metadata=stamp,
        )
    except Exception as error:  # the partition fails on its own; the others go on
        return _record_error(tables, contract, key, stamp, error)
    return PartitionValidation(
        profile.rows,
        profile.quarantined_rows,
        outcomes,
        validated.rows,
        validated.version,
        snapshot(tables.validated, contract.partitioning).file_count(key),
        quarantine.version,
    )


def _record_error(
    tables: DeploymentTables, contract: Contract, key: str, stamp: dict[str, str], error: Exception
) -> PartitionValidation:
    """Commit that ``key``'s validation errored (an empty quarantine stamped with the error and
    the files to blame), so no later run scores its older validated rows."""
    reason, files = describe_error(error)
    try:
        quarantine = replace_partition(
            tables.quarantine,
            contract.partitioning,
            key,
            [],
            canonical_schema(contract, with_reason=True),
            commit_metadata={**stamp, VERDICT: ERROR, REASON: reason, FILES: json.dumps(files)},
        )
    except Exception as unrecorded:
        raise _Unrecorded(key, unrecorded) from error
    return PartitionValidation(0, 0, [], None, None, None, quarantine.version, reason, files)


def _failure(results: dict[str, PartitionValidation], errors: dict[str, PartitionValidation]):
    lines = [_report_line(day, r) for day, r in errors.items()]
    failed = ", ".join(str(day) for day in errors)
    return dg.Failure(
        description=f"{len(errors)} of {len(results)} partitions could not be validated "
        f"({failed}); "
        + (
            "the others were validated and committed.\n"
            if len(errors) < len(results)
            else "none was validated.\n"
        )
        + "\n".join(lines),
        metadata={
            "failed_partitions": [str(day) for day in errors],
            "validated_partitions": [str(d) for d, r in results.items() if r.error is None],
            "error_report": dg.MetadataValue.md(_error_table(errors)),
        },
    )


def _report_line(day: str, result: PartitionValidation) -> str:
    """``day: file: error``."""
    if not result.error_files:
        return f"{day}: {result.error}"
    return f"{day}: {', '.join(result.error_files)}: {result.error}"


def _error_table(errors: dict[str, PartitionValidation]) -> str:
    rows = [
        f"| {day} | {'<br>'.join(r.error_files) or '-'} | {(r.error or '').replace('|', '/')} |"
        for day, r in errors.items()
    ]
    return "\n".join(["| partition | file | error |", "|---|---|---|", *rows])


def _record_partial(
    context: dg.AssetExecutionContext,
    scope: DeploymentScope,
    features: Snapshot,
    results: dict[str, PartitionValidation],
) -> None:
    """Record the days whose validation committed, before the step fails for the others."""
    for key, result in results.items():
        if result.error is not None:
            continue
        context.log_event(
            dg.AssetMaterialization(
                asset_key=scope.validated,
                partition=None if key == WHOLE_TABLE else key,
                metadata={
                    **_day_metadata(result),
                    "feature_table_version": features.version,
                    "partial_run": True,
                },
            )
        )


def _day_metadata(result: PartitionValidation) -> dict[str, int | str | bool | None]:
    values: dict[str, int | str | bool | None] = {
        "rows_in": result.rows_in,
        "rows_quarantined": result.rows_quarantined,
        "validated_rows": result.validated_rows,
        "passed": result.passed,
        "delta_version": result.delta_version,
        "files": result.files,
        "quarantine_delta_version": result.quarantine_delta_version,
    }
    if result.error is not None:
        values["error"] = result.error
    return values


def _metadata(
    watch: Stopwatch,
    features: Snapshot,
    tables: DeploymentTables,
    results: dict[str, PartitionValidation],
) -> dict[str, Any]:
    written = [r for r in results.values() if r.validated_rows is not None]
    metadata: dict[str, Any] = {
        **watch.metadata(sum(r.validated_rows or 0 for r in written)),
        "rows_in": sum(r.rows_in for r in results.values()),
        "rows_quarantined": sum(r.rows_quarantined for r in results.values()),
        "feature_table_version": features.version,
        "table_uri": dg.MetadataValue.path(tables.validated.uri),
        "quarantine_uri": dg.MetadataValue.path(tables.quarantine.uri),
        "partitions": per_partition({day: _day_metadata(r) for day, r in results.items()}),
    }
    if written:
        metadata["delta_version"] = max(r.delta_version or 0 for r in written)
    errors = {day: r for day, r in results.items() if r.error is not None}
    if errors:
        metadata["failed_partitions"] = [str(day) for day in errors]
        metadata["error_report"] = dg.MetadataValue.md(_error_table(errors))
    return metadata


def _check(
    name: str, evaluated: dict[str, PartitionValidation], errors: dict[str, PartitionValidation]
) -> dg.AssetCheckResult:
    """One check over the days that could be read; the others are named as not evaluated
    (the scoring step of the run fails them)."""
    result = combine_checks(
        name,
        {day: _verdict(r, name) for day, r in evaluated.items()},
        severity=dg.AssetCheckSeverity.ERROR,
        metadata=_figures(evaluated, name) if not errors else {},
    )
    if not errors:
        return result
    skipped = ", ".join(str(day) for day in errors)
    return dg.AssetCheckResult(
        check_name=name,
        passed=result.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=f"{result.description} Not evaluated (features unreadable): {skipped}.",
    )


def _figures(results: dict[str, PartitionValidation], name: str) -> dict[str, float | int | str]:
    """The check's figures when the run covers one day (a backfill lists days instead)."""
    if len(results) != 1:
        return {}
    outcome = next(o for o in next(iter(results.values())).outcomes if o.name == name)
    return dict(outcome.metadata)


def _verdict(result: PartitionValidation, name: str) -> tuple[bool, str]:
    outcome = next(o for o in result.outcomes if o.name == name)
    return outcome.passed, outcome.description
