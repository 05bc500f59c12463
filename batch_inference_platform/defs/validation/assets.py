"""Validated feature partitions: the contract enforced, bad rows quarantined, scoring gated."""

import dagster as dg

from batch_inference_platform.defs.features.assets import FEATURES_KEY
from batch_inference_platform.defs.partitions import DAILY_PARTITIONS, Stopwatch, partition_day
from batch_inference_platform.defs.resources import LakeResource, QualityPolicyResource
from batch_inference_platform.lib.lake.tables import (
    TableNotFoundError,
    replace_partition,
    snapshot,
)
from batch_inference_platform.lib.quality.rules import canonical_schema
from batch_inference_platform.lib.quality.validation import (
    ROW_CHECKS,
    CheckOutcome,
    judge,
    profile_partition,
    quarantined_rows,
    valid_rows,
)

VALIDATED_KEY = dg.AssetKey("validated_features")
BLOCKING_CHECKS = ("schema_matches_contract", *ROW_CHECKS)


@dg.asset(
    key=VALIDATED_KEY,
    deps=[FEATURES_KEY],
    partitions_def=DAILY_PARTITIONS,
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
    day = partition_day(context)
    watch = Stopwatch()
    layout = lake.layout
    try:
        features = snapshot(layout.features)
    except TableNotFoundError as error:
        raise dg.Failure(
            f"cannot validate {day}: {error}; materialize feature_tables first"
        ) from error

    def source(columns: list[str] | None = None):
        return features.batches(day, columns=columns)

    profile = profile_partition(source, features.schema, day)
    outcomes = judge(profile, policy.validation)
    passed = all(o.passed for o in outcomes)
    commit_metadata = {"dagster_run_id": context.run_id, "partition": day.isoformat()}
    metadata: dict[str, dg.MetadataValue] = {
        "rows_in": dg.MetadataValue.int(profile.rows),
        "rows_quarantined": dg.MetadataValue.int(profile.quarantined_rows),
        "feature_table_version": dg.MetadataValue.int(features.version),
        "table_uri": dg.MetadataValue.path(layout.validated.uri),
    }
    if not profile.schema_problems:
        quarantine = replace_partition(
            layout.quarantine,
            day,
            quarantined_rows(source, day, profile),
            canonical_schema(with_reason=True),
            commit_metadata=commit_metadata,
        )
        metadata["quarantine_delta_version"] = dg.MetadataValue.int(quarantine.version)
        metadata["quarantine_uri"] = dg.MetadataValue.path(layout.quarantine.uri)
    if passed:
        commit = replace_partition(
            layout.validated,
            day,
            valid_rows(source, day, profile),
            canonical_schema(),
            commit_metadata=commit_metadata,
        )
        metadata |= {
            **watch.metadata(commit.rows),
            "delta_version": dg.MetadataValue.int(commit.version),
            "files_in_partition": dg.MetadataValue.int(snapshot(layout.validated).file_count(day)),
        }
    else:
        context.log.error(
            f"partition {day} failed validation and is not scored; its validated partition "
            "keeps the last version that passed (if any): "
            + "; ".join(f"{o.name}: {o.description}" for o in outcomes if not o.passed)
        )
        metadata |= {
            **watch.metadata(0),
            "validated_partition": dg.MetadataValue.text("unchanged (validation failed)"),
        }
    return dg.MaterializeResult(
        metadata=metadata, check_results=[_check_result(o) for o in outcomes]
    )


def _check_result(outcome: CheckOutcome) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=outcome.name,
        passed=outcome.passed,
        description=outcome.description,
        metadata=dict(outcome.metadata),
        severity=dg.AssetCheckSeverity.ERROR,
    )
