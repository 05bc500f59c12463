"""Validated feature partitions: the contract enforced, bad rows quarantined, scoring gated."""

import dataclasses
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
import pyarrow as pa

from batch_inference_platform.defs import display
from batch_inference_platform.defs.metadata import ROW_COUNT
from batch_inference_platform.defs.partitions import (
    Stopwatch,
    Verdict,
    check_spec,
    per_partition_results,
)
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
CHECK_DESCRIPTIONS = {
    "schema_matches_contract": "The partition has every contract column, in a type that converts "
    "safely to the contract's.",
    "row_count_at_least_minimum": "The partition has at least the deployment's minimum rows "
    "(checks.min_rows).",
    "null_rates_within_limits": "No contract column has more nulls than its limit "
    "(checks.max_null_rate).",
    "quarantine_rate_within_limit": "Rows that break the contract (quarantined with their reason) "
    "are at most checks.max_quarantine_rate of the partition.",
    "duplicate_keys_within_limit": "Rows repeating a key are at most checks.max_duplicate_rate of "
    "the partition.",
}
"""What each blocking check means (shown in the UI); a failure stops the partition's scoring."""


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
    seconds: float = 0.0
    """How long the partition's validation took."""

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
            check_spec(
                name,
                scope.validated,
                CHECK_DESCRIPTIONS[name],
                scope.partitions_def,
                blocking=True,
            )
            for name in BLOCKING_CHECKS
        ],
    )
    def validated_features(
        context: dg.AssetExecutionContext,
        lake: LakeResource,
        policy: QualityPolicyResource,
        registry: ModelRegistryResource,
    ) -> Iterator[dg.MaterializeResult | dg.Output | dg.AssetCheckEvaluation]:
        yield from _validate(context, scope, lake, policy, registry)

    return validated_features


def _validate(
    context: dg.AssetExecutionContext,
    scope: DeploymentScope,
    lake: LakeResource,
    policy: QualityPolicyResource,
    registry: ModelRegistryResource,
) -> Iterator[dg.MaterializeResult | dg.Output | dg.AssetCheckEvaluation]:
    deployment = scope.deployment
    keys = scope.partition_keys(context)
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
            watch = Stopwatch()
            result = _validate_day(context, features, tables, contract, key, limits)
            results[key] = dataclasses.replace(result, seconds=watch.seconds)
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
    yield from per_partition_results(
        context,
        metadata={
            **display.table(tables.validated.uri, canonical_schema(contract)),
            "quarantine_uri": dg.MetadataValue.path(tables.quarantine.uri),
            "feature_table_version": display.identifier(features.version),
        },
        partitions={key: _day_metadata(result) for key, result in results.items()},
        verdicts={
            name: {
                key: _verdict(key, result, name)
                for key, result in results.items()
                if result.error is None
            }
            for name in BLOCKING_CHECKS
        },
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
                    "feature_table_version": display.identifier(features.version),
                    "partial_run": True,
                },
            )
        )


def _day_metadata(result: PartitionValidation) -> dict[str, Any]:
    """One partition's own figures (versions as text: they are identifiers, not measurements)."""
    values: dict[str, Any] = {
        ROW_COUNT: result.validated_rows or 0,
        "rows_in": result.rows_in,
        "rows_quarantined": result.rows_quarantined,
        "passed": result.passed,
        "seconds": round(result.seconds, 3),
        "rows_per_second": round(result.rows_in / result.seconds, 1) if result.seconds else 0.0,
    }
    if result.delta_version is not None:
        values["delta_version"] = display.identifier(result.delta_version)
    if result.files is not None:
        values["files"] = result.files
    if result.quarantine_delta_version is not None:
        values["quarantine_delta_version"] = display.identifier(result.quarantine_delta_version)
    if result.error is not None:
        values["error"] = result.error
    return values


def _verdict(key: str, result: PartitionValidation, name: str) -> Verdict:
    outcome = next(o for o in result.outcomes if o.name == name)
    return Verdict(outcome.passed, f"{key}: {outcome.description}", dict(outcome.metadata))
