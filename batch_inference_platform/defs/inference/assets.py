"""Prediction tables: each validated partition scored by the serving model version."""

from collections.abc import Mapping
from typing import Any

import dagster as dg
import pyarrow as pa

from batch_inference_platform.defs.metadata import PartitionFigures, PredictionsMetadata
from batch_inference_platform.defs.models.serving import ServingModel
from batch_inference_platform.defs.partitions import Stopwatch, combine_checks
from batch_inference_platform.defs.resources import (
    LakeResource,
    ModelRegistryResource,
    QualityPolicyResource,
    ScoringEngineResource,
)
from batch_inference_platform.defs.scope import DeploymentScope
from batch_inference_platform.lib.deployments.partitioning import WHOLE_TABLE, Partitioning
from batch_inference_platform.lib.lake.errors import error_summary
from batch_inference_platform.lib.lake.layout import DeploymentTables
from batch_inference_platform.lib.lake.lineage import latest_commit
from batch_inference_platform.lib.lake.tables import DeltaLocation, Snapshot, snapshot
from batch_inference_platform.lib.quality.verdicts import validation_states
from batch_inference_platform.lib.registry.client import ModelNotFoundError
from batch_inference_platform.lib.registry.compatibility import input_names
from batch_inference_platform.lib.registry.resolution import record_served
from batch_inference_platform.lib.registry.usage import log_scoring_run
from batch_inference_platform.lib.scoring.outputs import SUM_TOLERANCE, OutputKind, OutputSpec
from batch_inference_platform.lib.scoring.request import (
    EngineResult,
    ModelRef,
    PartitionError,
    PartitionReport,
    ScoringRequest,
)
from batch_inference_platform.lib.scoring.stats import ScoreStats, population_stability

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
DRIFT_CHECK = "score_drift_psi"
NO_NULLS_CHECK = "no_null_scores"
UNIT_RANGE_CHECK = "scores_in_unit_range"
SUM_CHECK = "class_probabilities_sum_to_one"


def prediction_check_specs(key: dg.AssetKey, kind: OutputKind) -> list[dg.AssetCheckSpec]:
    """The checks a prediction table of ``kind`` gets (they follow what its columns mean)."""
    specs = [
        dg.AssetCheckSpec(
            "row_count_matches_validated",
            asset=key,
            description="Every validated row of the partition has one prediction.",
        ),
        dg.AssetCheckSpec(
            NO_NULLS_CHECK,
            asset=key,
            description="Every prediction is present and finite (scores) or non-null (labels).",
        ),
    ]
    if kind in (OutputKind.PROBABILITY, OutputKind.CLASS_PROBABILITIES):
        specs.append(
            dg.AssetCheckSpec(
                UNIT_RANGE_CHECK,
                asset=key,
                description="Every probability lies in [0, 1].",
            )
        )
    if kind is OutputKind.CLASS_PROBABILITIES:
        specs.append(
            dg.AssetCheckSpec(
                SUM_CHECK,
                asset=key,
                description=f"Each row's class probabilities sum to 1 (within {SUM_TOLERANCE:g}).",
            )
        )
    specs.append(
        dg.AssetCheckSpec(
            DRIFT_CHECK,
            asset=key,
            description="Population stability index of the prediction distribution "
            "against the earliest scored partition.",
        )
    )
    return specs


def build_predictions(scope: DeploymentScope, *, engine_key: str) -> dg.AssetsDefinition:
    """``<name>/predictions``: the deployment's validated partitions scored with its model on
    the engine resource ``engine_key``."""
    deployment = scope.deployment
    kind = deployment.output.kind

    @dg.asset(
        key=scope.predictions,
        deps=[scope.validated],
        ins={"serving": dg.AssetIn(scope.model_versions)},
        partitions_def=scope.partitions_def,
        backfill_policy=scope.backfill_policy,
        group_name=scope.group,
        kinds={"deltalake"},
        description=f"{deployment.name}: predictions ({kind.value}) per "
        f"{', '.join(deployment.identity)}, with the model version and run that produced them; "
        "each partition is replaced in its own Delta commit.",
        check_specs=prediction_check_specs(scope.predictions, kind),
        required_resource_keys={"lake", "registry", "policy", engine_key},
    )
    def predictions(
        context: dg.AssetExecutionContext, serving: ServingModel
    ) -> dg.MaterializeResult:
        resources = context.resources
        lake: LakeResource = resources.lake
        registry: ModelRegistryResource = resources.registry
        policy: QualityPolicyResource = resources.policy
        engine: ScoringEngineResource = getattr(resources, engine_key)
        return _score(context, scope, serving, lake, registry, policy, engine)

    return predictions


def _score(
    context: dg.AssetExecutionContext,
    scope: DeploymentScope,
    serving: ServingModel,
    lake: LakeResource,
    registry: ModelRegistryResource,
    policy: QualityPolicyResource,
    engine: ScoringEngineResource,
) -> dg.MaterializeResult:
    deployment = scope.deployment
    partitioning = deployment.partitioning
    keys = scope.partition_keys(context)
    watch = Stopwatch()
    _refuse_stale(registry, serving)
    tables = lake.layout.deployment(deployment)
    validated = snapshot(tables.validated, partitioning)
    refused = _refused(tables, validated, keys)
    if len(refused) == len(keys):
        _fail_with_error_report(context, scope, EngineResult(errors=refused), serving)
    keys = [key for key in keys if key not in {error.key for error in refused}]
    output = serving.output
    request = ScoringRequest(
        keys=keys,
        identity=deployment.identity,
        partitioning=partitioning.to_json(),
        validated_uri=tables.validated.uri,
        predictions_uri=tables.predictions.uri,
        model=ModelRef(
            name=serving.version.name,
            version=serving.version.version,
            tracking_uri=registry.tracking_uri,
            registry_uri=registry.registry_uri,
        ),
        feature_names=serving_inputs(registry, serving, validated.schema),
        output=output.to_json(),
        dagster_run_id=context.run_id,
        model_cache_dir=registry.model_cache_dir,
        commit_metadata={
            key: {
                "dagster_run_id": context.run_id,
                "partition": key,
                "deployment": deployment.name,
                "validated_version": str(_validated_commit(tables, key, validated.version)),
                "model_name": serving.version.name,
                "model_version": str(serving.version.version),
            }
            for key in keys
        },
        storage_options=dict(lake.storage_options),
        azure_auth=lake.azure_auth,
    )
    outcome = engine.score(context, request, lake=lake, registry=registry)
    outcome.errors = sorted([*refused, *outcome.errors], key=lambda error: error.key)
    target = tables.predictions
    scored = outcome.scored
    if outcome.errors:
        _fail_with_error_report(context, scope, outcome, serving)
    psi_threshold, bins = policy.drift_for(deployment.checks)
    references: dict[str, ScoreStats] = {}
    drift = {
        key: _drift(target, partitioning, key, result.stats, output, bins, references)
        for key, result in scored.items()
    }
    combined = ScoreStats()
    for result in scored.values():
        combined.merge(result.stats)
    quantiles = {f"score_{name}": value for name, value in combined.quantiles(QUANTILES).items()}
    rows = sum(r.rows for r in scored.values())
    seconds = watch.seconds
    record = PredictionsMetadata(
        deployment=deployment.name,
        rows=rows,
        model_name=serving.version.name,
        model_version=serving.version.version,
        output_kind=output.kind.value,
        delta_version=max(r.delta_version for r in scored.values()),
        engine=engine.name,
        table_uri=target.uri,
        seconds=seconds,
        rows_per_second=rows / seconds if seconds else 0.0,
        validated_version=validated.version,
        validated_rows=sum(r.input_rows for r in scored.values()),
        model_uri=registry.link(serving.version),
        partitions={
            key: PartitionFigures(r.rows, r.delta_version, r.seconds, r.rows_per_second)
            for key, r in scored.items()
        },
    )
    metadata: dict[str, Any] = {**record.to_metadata(), **outcome.metadata, **quantiles}
    if combined.labels:
        metadata["label_counts"] = dg.MetadataValue.json(dict(sorted(combined.labels.items())))
    metadata["mlflow_scoring_run"] = log_scoring_run(
        registry.registry,
        experiment=registry.experiment,
        artifact_root=registry.artifact_root,
        version=serving.version,
        dagster_run_id=context.run_id,
        partitions=keys,
        metrics={
            "rows": rows,
            "rows_per_second": rows / max(watch.seconds, 1e-9),
            "partitions": len(keys),
            **quantiles,
        },
    )
    checks = _check_results(scored, drift, output, psi_threshold)
    if all(c.passed for c in checks if c.severity == dg.AssetCheckSeverity.ERROR):
        record_served(registry.registry, serving.version)  # an approved champion from now on
    else:
        context.log.warning(
            f"{serving.version.uri} is not recorded as an approved champion: a check failed"
        )
    return dg.MaterializeResult(metadata=metadata, check_results=checks)


def _check_results(
    scored: Mapping[str, PartitionReport],
    drift: Mapping[str, tuple[float | None, str | None]],
    output: OutputSpec,
    psi_threshold: float,
) -> list[dg.AssetCheckResult]:
    results = [
        combine_checks(
            "row_count_matches_validated",
            {
                key: (r.rows == r.input_rows, f"{r.rows} scored of {r.input_rows} validated")
                for key, r in scored.items()
            },
        ),
        combine_checks(
            NO_NULLS_CHECK,
            {
                key: (r.stats.non_finite == 0, f"{r.stats.non_finite} null or non-finite")
                for key, r in scored.items()
            },
        ),
    ]
    if output.is_probability:
        results.append(
            combine_checks(
                UNIT_RANGE_CHECK,
                {
                    key: (
                        r.stats.out_of_range == 0,
                        f"{r.stats.out_of_range} outside [0, 1]; min {r.stats.min_score:.4g}, "
                        f"max {r.stats.max_score:.4g}",
                    )
                    for key, r in scored.items()
                },
            )
        )
    if output.kind is OutputKind.CLASS_PROBABILITIES:
        results.append(
            combine_checks(
                SUM_CHECK,
                {
                    key: (r.stats.not_summing == 0, f"{r.stats.not_summing} rows do not sum to 1")
                    for key, r in scored.items()
                },
            )
        )
    results.append(
        combine_checks(
            DRIFT_CHECK,
            {
                key: _drift_verdict(psi, reference, psi_threshold)
                for key, (psi, reference) in drift.items()
            },
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"max_psi": max((p for p, _ in drift.values() if p is not None), default=0.0)},
        )
    )
    return results


def _refuse_stale(registry: ModelRegistryResource, serving: ServingModel) -> None:
    """Fail when the alias has moved since ``model_versions`` resolved the serving version (or
    it was resolved by a platform version that did not bind an output kind)."""
    if not hasattr(serving, "output"):
        raise dg.Failure(
            "stale serving version: model_versions was materialized by an older platform version "
            "(no output kind); materialize model_versions with predictions"
        )
    try:
        holder = registry.registry.by_alias(serving.version.name, serving.alias)
    except ModelNotFoundError as error:
        raise dg.Failure(str(error)) from error
    if holder.version != serving.alias_holder_version:
        raise dg.Failure(
            f"stale serving version: model_versions resolved {serving.version.name}@"
            f"{serving.alias} when it pointed at v{serving.alias_holder_version} (serving "
            f"v{serving.version.version}); it now points at v{holder.version}. Materialize "
            "model_versions with predictions (score_partition_job or rescore_job)."
        )


def _refused(
    tables: DeploymentTables, validated: Snapshot, keys: list[str]
) -> list[PartitionError]:
    """The days not to score, each with why: its latest validation failed, errored or did not
    finish (its older validated rows are not scored as if they were valid), or it has no
    validated rows."""
    refused = []
    for key, state in validation_states(tables, keys).items():
        reason = state.refusal
        if reason is None and _validated_rows(validated, key) == 0:
            reason = (
                f"no validated rows at {tables.validated.uri}: it was never validated "
                "(see validated_features)"
            )
        if reason is not None:
            refused.append(PartitionError(key, reason, list(state.files)))
    return refused


def _validated_rows(validated: Snapshot, key: str) -> int | None:
    """Rows validated for ``key``; None if its files cannot be read (the engine reports it)."""
    try:
        return validated.count(key)
    except (OSError, pa.ArrowException):
        return None


def _fail_with_error_report(
    context: dg.AssetExecutionContext,
    scope: DeploymentScope,
    outcome: EngineResult,
    serving: ServingModel,
) -> None:
    """Record the days that committed, then fail the step with the error report (partition,
    files to blame, error) so the failed days can be retried."""
    for key, report in outcome.scored.items():
        context.log_event(
            dg.AssetMaterialization(
                asset_key=scope.predictions,
                partition=None if key == WHOLE_TABLE else key,
                metadata=PredictionsMetadata(
                    deployment=scope.name,
                    rows=report.rows,
                    model_name=serving.version.name,
                    model_version=serving.version.version,
                    output_kind=serving.output.kind.value,
                    delta_version=report.delta_version,
                    seconds=report.seconds,
                    rows_per_second=report.rows_per_second,
                    validated_rows=report.input_rows,
                    partial=True,
                ).to_metadata(),
            )
        )
    lines = [
        f"{error.key}: {', '.join(error.files)}: {error_summary(error.error)}"
        if error.files
        else f"{error.key}: {error_summary(error.error)}"
        for error in outcome.errors
    ]
    failed = ", ".join(str(error.key) for error in outcome.errors)
    raise dg.Failure(
        description=f"{len(outcome.errors)} of {len(outcome.errors) + len(outcome.scored)} "
        f"partitions failed ({failed}); "
        + ("the others were scored and committed.\n" if outcome.scored else "none was scored.\n")
        + "\n".join(lines),
        metadata={
            "failed_partitions": [str(error.key) for error in outcome.errors],
            "scored_partitions": list(outcome.scored),
            "error_report": dg.MetadataValue.md(_error_table(outcome)),
        },
    )


def _error_table(outcome: EngineResult) -> str:
    rows = [
        f"| {e.key} | {'<br>'.join(e.files) or '-'} | {error_summary(e.error).replace('|', '/')} |"
        for e in outcome.errors
    ]
    return "\n".join(["| partition | file | error |", "|---|---|---|", *rows])


def _validated_commit(tables: DeploymentTables, key: str, as_of: int) -> int:
    """The validated table version that last wrote ``key`` (what its scores were made from)."""
    commit = latest_commit(tables.validated, key, as_of=as_of)
    return commit.version if commit is not None else as_of


def serving_inputs(
    registry: ModelRegistryResource, serving: ServingModel, schema: pa.Schema
) -> list[str]:
    """The serving version's input columns (from its signature) that the table has."""
    signature = registry.registry.signature(serving.version)
    assert signature is not None  # model_versions only serves versions whose signature fits
    return [name for name in input_names(signature) if schema.get_field_index(name) >= 0]


def _drift_verdict(psi: float | None, reference: str | None, threshold: float) -> tuple[bool, str]:
    if psi is None:
        return True, "No earlier partition to compare with yet."
    return psi <= threshold, f"PSI {psi:.4f} vs {reference} (threshold {threshold})"


def _drift(
    target: DeltaLocation,
    partitioning: Partitioning,
    key: str,
    current: ScoreStats,
    output: OutputSpec,
    bins: int,
    references: dict[str, ScoreStats],
) -> tuple[float | None, str | None]:
    """PSI against the earliest other scored partition (the baseline), if there is one.

    ``references`` caches baseline statistics across the partitions of one run."""
    scored = snapshot(target, partitioning)
    earlier = [k for k in scored.partitions() if k != key]
    if not earlier:
        return None, None
    reference = earlier[0]
    if reference not in references:
        columns = [f.name for f in output.fields]
        stats = ScoreStats()
        for batch in scored.batches(reference, columns=columns):
            stats.add(batch, output)
        references[reference] = stats
    return population_stability(references[reference], current, output, bins), reference
