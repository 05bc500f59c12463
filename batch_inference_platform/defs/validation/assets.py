"""Validated feature partitions: the contract enforced, bad rows quarantined, scoring gated."""

import datetime as dt
from dataclasses import dataclass

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

VALIDATED_KEY = dg.AssetKey("validated_features")
BLOCKING_CHECKS = ("schema_matches_contract", *ROW_CHECKS)


@dataclass(frozen=True)
class DayValidation:
    """One partition's verdict and what was written for it."""

    rows_in: int
    rows_quarantined: int
    outcomes: list[CheckOutcome]
    validated_rows: int | None
    """Rows committed to the validated table; None when the partition failed (not replaced)."""
    delta_version: int | None
    files: int | None
    quarantine_delta_version: int | None

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outcomes)


@dg.asset(
    key=VALIDATED_KEY,
    deps=[FEATURES_KEY],
    partitions_def=DAILY_PARTITIONS,
    backfill_policy=SINGLE_RUN_BACKFILL,
    group_name="validation",
    kinds={"deltalake"},
    description="Feature partitions that meet the feature contract, compacted and in contract "
    "types; failing rows go to the quarantine table with their reasons. A partition that fails "
    "a blocking check is not scored and does not replace the last version that passed.",
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
    results = {
        day: _validate_day(context, features, layout, day, policy.validation) for day in days
    }
    for day, result in results.items():
        if not result.passed:
            context.log.error(
                f"partition {day} failed validation and is not scored; its validated partition "
                "keeps the last version that passed (if any): "
                + "; ".join(f"{o.name}: {o.description}" for o in result.outcomes if not o.passed)
            )
    written = [r for r in results.values() if r.validated_rows is not None]
    metadata = {
        **watch.metadata(sum(r.validated_rows or 0 for r in written)),
        "rows_in": sum(r.rows_in for r in results.values()),
        "rows_quarantined": sum(r.rows_quarantined for r in results.values()),
        "feature_table_version": features.version,
        "table_uri": dg.MetadataValue.path(layout.validated.uri),
        "quarantine_uri": dg.MetadataValue.path(layout.quarantine.uri),
        "partitions": per_partition(
            {
                day: {
                    "rows_in": r.rows_in,
                    "rows_quarantined": r.rows_quarantined,
                    "validated_rows": r.validated_rows,
                    "passed": r.passed,
                    "delta_version": r.delta_version,
                    "files": r.files,
                    "quarantine_delta_version": r.quarantine_delta_version,
                }
                for day, r in results.items()
            }
        ),
    }
    if written:
        metadata["delta_version"] = max(r.delta_version or 0 for r in written)
    return dg.MaterializeResult(
        metadata=metadata,
        check_results=[
            combine_checks(
                name,
                {day: _verdict(r, name) for day, r in results.items()},
                severity=dg.AssetCheckSeverity.ERROR,
                metadata=_figures(results, name),
            )
            for name in BLOCKING_CHECKS
        ],
    )


def _validate_day(
    context: dg.AssetExecutionContext,
    features: Snapshot,
    layout: LakeLayout,
    day: dt.date,
    policy: ValidationPolicy,
) -> DayValidation:
    """Profile, judge and write one partition: quarantine always, validated only if it passed."""

    def source(columns: list[str] | None = None):
        return features.batches(day, columns=columns)

    profile = profile_partition(source, features.schema, day)
    outcomes = judge(profile, policy)
    commit_metadata = {
        "dagster_run_id": context.run_id,
        "partition": day.isoformat(),
        "feature_table_version": str(features.version),
    }
    quarantine_version = None
    if not profile.schema_problems:
        quarantine_version = replace_partition(
            layout.quarantine,
            day,
            quarantined_rows(source, day, profile),
            canonical_schema(with_reason=True),
            commit_metadata=commit_metadata,
        ).version
    if not all(o.passed for o in outcomes):
        return DayValidation(
            profile.rows, profile.quarantined_rows, outcomes, None, None, None, quarantine_version
        )
    commit = replace_partition(
        layout.validated,
        day,
        valid_rows(source, day, profile),
        canonical_schema(),
        commit_metadata=commit_metadata,
    )
    files = snapshot(layout.validated).file_count(day)
    return DayValidation(
        profile.rows,
        profile.quarantined_rows,
        outcomes,
        commit.rows,
        commit.version,
        files,
        quarantine_version,
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
