"""Validated feature partitions: the contract enforced, bad rows quarantined, scoring gated."""

import datetime as dt
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from batch_inference_platform.defs.features.assets import FEATURES_KEY
from batch_inference_platform.defs.partitions import (
    DAILY_PARTITIONS,
    SINGLE_RUN_BACKFILL,
    Stopwatch,
    combine_checks,
    partition_days,
    per_partition,
)
from batch_inference_platform.defs.resources import LakeResource, QualityPolicyResource
from batch_inference_platform.lib.lake.errors import describe_error, error_summary
from batch_inference_platform.lib.lake.layout import LakeLayout
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

VALIDATED_KEY = dg.AssetKey("validated_features")
SCORING_KEY = dg.AssetKey("predictions")
BLOCKING_CHECKS = ("schema_matches_contract", *ROW_CHECKS)


@dataclass(frozen=True)
class DayValidation:
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

    def __init__(self, day: dt.date, error: BaseException) -> None:
        super().__init__(
            f"{error_summary(error)}; {day} is not scored until validated_features is "
            "materialized for it again"
        )


@dg.asset(
    key=VALIDATED_KEY,
    deps=[FEATURES_KEY],
    partitions_def=DAILY_PARTITIONS,
    backfill_policy=SINGLE_RUN_BACKFILL,
    group_name="validation",
    kinds={"deltalake"},
    description="Feature partitions that meet the feature contract, compacted and in contract "
    "types; failing rows go to the quarantine table with their reasons. A partition that fails "
    "a blocking check, or whose features cannot be read, is not scored and does not replace "
    "the last version that passed (which is not scored either); each day is validated on its "
    "own.",
    check_specs=[
        dg.AssetCheckSpec(name, asset=VALIDATED_KEY, blocking=True) for name in BLOCKING_CHECKS
    ],
)
def validated_features(
    context: dg.AssetExecutionContext, lake: LakeResource, policy: QualityPolicyResource
) -> dg.MaterializeResult:
    days = partition_days(context)
    watch = Stopwatch()
    layout = lake.layout
    try:
        features = snapshot(layout.features)
    except TableNotFoundError as error:
        raise dg.Failure(f"cannot validate: {error}; materialize feature_tables first") from error
    results: dict[dt.date, DayValidation] = {}
    for day in days:
        try:
            results[day] = _validate_day(context, features, layout, day, policy.validation)
        except _Unrecorded as error:
            _record_partial(context, features, results)
            raise dg.Failure(
                description=f"validation of {day} failed and could not be recorded: {error}",
                metadata={"failed_partitions": [day.isoformat()]},
            ) from None
    for day, result in results.items():
        if result.error is not None:
            context.log.error(
                f"partition {day} could not be validated and is not scored: "
                + _report_line(day, result)
            )
        elif not result.passed:
            context.log.error(
                f"partition {day} failed validation and is not scored; its validated partition "
                "keeps the last version that passed (if any), which is not scored either: "
                + "; ".join(f"{o.name}: {o.description}" for o in result.outcomes if not o.passed)
            )
    errors = {day: r for day, r in results.items() if r.error is not None}
    if errors and not (_scoring_follows(context) and any(r.passed for r in results.values())):
        _record_partial(context, features, results)
        raise _failure(results, errors)
    evaluated = {day: r for day, r in results.items() if r.error is None}
    return dg.MaterializeResult(
        metadata=_metadata(watch, features, layout, results),
        check_results=[_check(name, evaluated, errors) for name in BLOCKING_CHECKS],
    )


def _validate_day(
    context: dg.AssetExecutionContext,
    features: Snapshot,
    layout: LakeLayout,
    day: dt.date,
    policy: ValidationPolicy,
) -> DayValidation:
    """Profile, judge and write one partition: its quarantine, stamped with the verdict, then
    - only if it passed - its validated rows, stamped with the same validation id (a partition
    that fails keeps its last validated version, which is no longer scored). A partition whose
    features cannot be read gets an ``error`` verdict; the other days go on."""

    def source(columns: list[str] | None = None):
        return features.batches(day, columns=columns)

    stamp = {
        "dagster_run_id": context.run_id,
        "partition": day.isoformat(),
        "feature_table_version": str(features.version),
        VALIDATION_ID: uuid.uuid4().hex,
    }
    try:
        profile = profile_partition(source, features.schema, day)
        outcomes = judge(profile, policy)
        passed = all(o.passed for o in outcomes)
        reason = "; ".join(f"{o.name}: {o.description}" for o in outcomes if not o.passed)
        quarantine = replace_partition(
            layout.quarantine,
            day,
            [] if profile.schema_problems else quarantined_rows(source, day, profile),
            canonical_schema(with_reason=True),
            commit_metadata={**stamp, VERDICT: PASSED if passed else FAILED, REASON: reason},
        )
        if not passed:
            return DayValidation(
                profile.rows,
                profile.quarantined_rows,
                outcomes,
                None,
                None,
                None,
                quarantine.version,
            )
        validated = replace_partition(
            layout.validated,
            day,
            valid_rows(source, day, profile),
            canonical_schema(),
            commit_metadata=stamp,
        )
    except Exception as error:  # the day fails on its own; the others go on
        return _record_error(layout, day, stamp, error)
    return DayValidation(
        profile.rows,
        profile.quarantined_rows,
        outcomes,
        validated.rows,
        validated.version,
        snapshot(layout.validated).file_count(day),
        quarantine.version,
    )


def _record_error(
    layout: LakeLayout, day: dt.date, stamp: dict[str, str], error: Exception
) -> DayValidation:
    """Commit that ``day``'s validation errored (an empty quarantine stamped with the error and
    the files to blame), so no later run scores its older validated rows."""
    reason, files = describe_error(error)
    try:
        quarantine = replace_partition(
            layout.quarantine,
            day,
            [],
            canonical_schema(with_reason=True),
            commit_metadata={**stamp, VERDICT: ERROR, REASON: reason, FILES: json.dumps(files)},
        )
    except Exception as unrecorded:
        raise _Unrecorded(day, unrecorded) from error
    return DayValidation(0, 0, [], None, None, None, quarantine.version, reason, files)


def _scoring_follows(context: dg.AssetExecutionContext) -> bool:
    """Whether this run goes on to score: then a day that could not be validated is reported
    by the scoring step, which scores the other days, instead of stopping them all here."""
    return SCORING_KEY in context.job_def.asset_layer.executable_asset_keys


def _failure(results: dict[dt.date, DayValidation], errors: dict[dt.date, DayValidation]):
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


def _report_line(day: dt.date, result: DayValidation) -> str:
    """``day: file: error``."""
    if not result.error_files:
        return f"{day}: {result.error}"
    return f"{day}: {', '.join(result.error_files)}: {result.error}"


def _error_table(errors: dict[dt.date, DayValidation]) -> str:
    rows = [
        f"| {day} | {'<br>'.join(r.error_files) or '-'} | {(r.error or '').replace('|', '/')} |"
        for day, r in errors.items()
    ]
    return "\n".join(["| partition | file | error |", "|---|---|---|", *rows])


def _record_partial(
    context: dg.AssetExecutionContext,
    features: Snapshot,
    results: dict[dt.date, DayValidation],
) -> None:
    """Record the days whose validation committed, before the step fails for the others."""
    for day, result in results.items():
        if result.error is not None:
            continue
        context.log_event(
            dg.AssetMaterialization(
                asset_key=VALIDATED_KEY,
                partition=day.isoformat(),
                metadata={
                    **_day_metadata(result),
                    "feature_table_version": features.version,
                    "partial_run": True,
                },
            )
        )


def _day_metadata(result: DayValidation) -> dict[str, int | str | bool | None]:
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
    layout: LakeLayout,
    results: dict[dt.date, DayValidation],
) -> dict[str, Any]:
    written = [r for r in results.values() if r.validated_rows is not None]
    metadata: dict[str, Any] = {
        **watch.metadata(sum(r.validated_rows or 0 for r in written)),
        "rows_in": sum(r.rows_in for r in results.values()),
        "rows_quarantined": sum(r.rows_quarantined for r in results.values()),
        "feature_table_version": features.version,
        "table_uri": dg.MetadataValue.path(layout.validated.uri),
        "quarantine_uri": dg.MetadataValue.path(layout.quarantine.uri),
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
    name: str, evaluated: dict[dt.date, DayValidation], errors: dict[dt.date, DayValidation]
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


def _figures(results: dict[dt.date, DayValidation], name: str) -> dict[str, float | int | str]:
    """The check's figures when the run covers one day (a backfill lists days instead)."""
    if len(results) != 1:
        return {}
    outcome = next(o for o in next(iter(results.values())).outcomes if o.name == name)
    return dict(outcome.metadata)


def _verdict(result: DayValidation, name: str) -> tuple[bool, str]:
    outcome = next(o for o in result.outcomes if o.name == name)
    return outcome.passed, outcome.description
