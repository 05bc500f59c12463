"""Prediction tables: each validated partition scored by the serving model version."""

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import dagster as dg
import pyarrow as pa

from batch_inference_platform.defs import display
from batch_inference_platform.defs.metadata import PredictionsMetadata
from batch_inference_platform.defs.models.serving import (
    OUTCOME_TAG,
    SCORED_VERSION_TAG,
    ServingModel,
)
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
    ScoringEngineResource,
)
from batch_inference_platform.defs.scope import DeploymentScope
from batch_inference_platform.lib.deployments.partitioning import WHOLE_TABLE, Partitioning
from batch_inference_platform.lib.lake.errors import error_summary
from batch_inference_platform.lib.lake.layout import DeploymentTables
from batch_inference_platform.lib.lake.lineage import latest_commit
from batch_inference_platform.lib.lake.tables import (
    DeltaLocation,
    Snapshot,
    TableNotFoundError,
    snapshot,
    table_schema,
)
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
ROW_COUNT_CHECK = "row_count_matches_validated"
DRIFT_CHECK = "score_drift_psi"
NO_NULLS_CHECK = "no_null_scores"
UNIT_RANGE_CHECK = "scores_in_unit_range"
SUM_CHECK = "class_probabilities_sum_to_one"


def prediction_check_specs(
    key: dg.AssetKey, kind: OutputKind, partitions_def: dg.PartitionsDefinition | None
) -> list[dg.AssetCheckSpec]:
    """The checks a prediction table of ``kind`` gets (they follow what its columns mean), one
    verdict per partition."""
    described = {
        ROW_COUNT_CHECK: "Every validated row of the partition has one prediction.",
        NO_NULLS_CHECK: "Every prediction is present and finite (scores) or non-null (labels).",
    }
    if kind in (OutputKind.PROBABILITY, OutputKind.CLASS_PROBABILITIES):
        described[UNIT_RANGE_CHECK] = "Every probability lies in [0, 1]."
    if kind is OutputKind.CLASS_PROBABILITIES:
        described[SUM_CHECK] = (
            f"Each row's class probabilities sum to 1 (within {SUM_TOLERANCE:g})."
        )
    described[DRIFT_CHECK] = (
        "Population stability index of the partition's prediction distribution against the "
        "earliest scored partition (a warning above the deployment's threshold)."
    )
    return [check_spec(name, key, text, partitions_def) for name, text in described.items()]


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
        check_specs=prediction_check_specs(scope.predictions, kind, scope.partitions_def),
        required_resource_keys={"lake", "registry", "policy", engine_key},
    )
    def predictions(
        context: dg.AssetExecutionContext, serving: ServingModel
    ) -> Iterator[dg.MaterializeResult | dg.Output | dg.AssetCheckEvaluation]:
        resources = context.resources
        lake: LakeResource = resources.lake
        registry: ModelRegistryResource = resources.registry
        policy: QualityPolicyResource = resources.policy
        engine: ScoringEngineResource = getattr(resources, engine_key)
        yield from _score(context, scope, serving, lake, registry, policy, engine)

    return predictions


def _score(
    context: dg.AssetExecutionContext,
    scope: DeploymentScope,
    serving: ServingModel,
    lake: LakeResource,
    registry: ModelRegistryResource,
    policy: QualityPolicyResource,
    engine: ScoringEngineResource,
) -> Iterator[dg.MaterializeResult | dg.Output | dg.AssetCheckEvaluation]:
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
    rows = sum(r.rows for r in scored.values())
    model_link = registry.link(serving.version)
    scoring_run = log_scoring_run(
        registry.registry,
        experiment=registry.experiment,
        artifact_root=registry.artifact_root,
        version=serving.version,
        dagster_run_id=context.run_id,
        partitions=keys,
        tags=_promotion_tags(serving),
        metrics={
            "rows": rows,
            "rows_per_second": rows / max(watch.seconds, 1e-9),
            "partitions": len(keys),
            **_quantiles(_combined(scored.values())),
        },
    )
    figures = {
        key: _partition_metadata(
            PredictionsMetadata(
                deployment=deployment.name,
                rows=r.rows,
                model_name=serving.version.name,
                model_version=serving.version.version,
                output_kind=output.kind.value,
                delta_version=r.delta_version,
                engine=engine.name,
                table_uri=target.uri,
                seconds=r.seconds,
                rows_per_second=r.rows_per_second,
                validated_version=int(request.commit_metadata[key]["validated_version"]),
                validated_rows=r.input_rows,
                model_uri=model_link,
            ),
            r.stats,
            output,
            drift[key],
        )
        for key, r in scored.items()
    }
    run_metadata: dict[str, Any] = {
        **display.table(target.uri, prediction_schema_of(target)),
        **{name: _engine_value(name, value) for name, value in outcome.metadata.items()},
        "mlflow_scoring_run": display.link(registry.run_link(scoring_run)),
        "run_partitions": display.identifier(len(keys)),
    }
    verdicts = _verdicts(scored, drift, output, psi_threshold)
    failed = [
        name
        for name, by_key in verdicts.items()
        if name != DRIFT_CHECK and not all(v.passed for v in by_key.values())
    ]
    scored_version = str(serving.version.version)
    context.instance.add_run_tags(
        context.run_id,
        {SCORED_VERSION_TAG: scored_version, OUTCOME_TAG: f"scored v{scored_version}"},
    )
    if not failed:
        record_served(registry.registry, serving.version)  # an approved champion from now on
    else:
        context.log.warning(
            f"{serving.version.uri} is not recorded as an approved champion: "
            f"{', '.join(failed)} failed"
        )
    yield from per_partition_results(
        context,
        metadata=run_metadata,
        partitions=figures,
        verdicts=verdicts,
        severity={DRIFT_CHECK: dg.AssetCheckSeverity.WARN},
    )


def _promotion_tags(serving: ServingModel) -> dict[str, str]:
    """What the MLflow scoring run records of the promotion that requested it, if any."""
    if serving.requested_version is None:
        return {}
    return {
        "requested_model_version": str(serving.requested_version),
        "promotion": serving.promotion or "",
    }


def _combined(reports: Iterable[PartitionReport]) -> ScoreStats:
    combined = ScoreStats()
    for report in reports:
        combined.merge(report.stats)
    return combined


def _quantiles(stats: ScoreStats) -> dict[str, float]:
    return {f"score_{name}": value for name, value in stats.quantiles(QUANTILES).items()}


def _partition_metadata(
    record: PredictionsMetadata,
    stats: ScoreStats,
    output: OutputSpec,
    drift: tuple[float | None, str | None],
) -> dict[str, Any]:
    """One partition's own figures: its record, score distribution, quantiles and drift."""
    values: dict[str, Any] = {
        **record.to_metadata(),
        "score_distribution": dg.MetadataValue.md(display.histogram(stats, output)),
    }
    quantiles = stats.quantiles(QUANTILES)
    if quantiles:
        values["score_quantiles"] = dg.MetadataValue.json(
            {name: round(value, 6) for name, value in quantiles.items()}
        )
    if stats.labels:
        values["label_counts"] = dg.MetadataValue.json(dict(sorted(stats.labels.items())))
    psi, reference = drift
    if psi is not None:
        values["psi"] = dg.MetadataValue.float(round(psi, 6))
        values["drift_reference"] = dg.MetadataValue.text(str(reference))
    return values


def _engine_value(name: str, value: Any) -> Any:
    """What an engine reports for the run, as text where a plot would mislead (a model load
    time that the process cache makes constant)."""
    if name == "model_load_seconds":
        return dg.MetadataValue.text(f"{float(value):.3f}")
    return value


def prediction_schema_of(target: DeltaLocation) -> pa.Schema | None:
    """The prediction table's columns as written (None if it cannot be read)."""
    try:
        return table_schema(target)
    except (OSError, pa.ArrowException, TableNotFoundError):
        return None


def _verdicts(
    scored: Mapping[str, PartitionReport],
    drift: Mapping[str, tuple[float | None, str | None]],
    output: OutputSpec,
    psi_threshold: float,
) -> dict[str, dict[str, Verdict]]:
    """Each check's verdict per partition, with the figures it judged."""
    verdicts: dict[str, dict[str, Verdict]] = {
        ROW_COUNT_CHECK: {
            key: Verdict(
                r.rows == r.input_rows,
                f"{key}: {r.rows:,} scored of {r.input_rows:,} validated rows.",
                {"scored_rows": r.rows, "validated_rows": r.input_rows},
            )
            for key, r in scored.items()
        },
        NO_NULLS_CHECK: {
            key: Verdict(
                r.stats.non_finite == 0,
                f"{key}: {r.stats.non_finite:,} null or non-finite of {r.rows:,}.",
                {"null_or_non_finite": r.stats.non_finite, "rows": r.rows},
            )
            for key, r in scored.items()
        },
    }
    if output.is_probability:
        verdicts[UNIT_RANGE_CHECK] = {
            key: Verdict(
                r.stats.out_of_range == 0,
                f"{key}: {r.stats.out_of_range:,} outside [0, 1]; min {r.stats.min_score:.4g}, "
                f"max {r.stats.max_score:.4g}.",
                {
                    "out_of_range": r.stats.out_of_range,
                    "min_score": r.stats.min_score,
                    "max_score": r.stats.max_score,
                },
            )
            for key, r in scored.items()
        }
    if output.kind is OutputKind.CLASS_PROBABILITIES:
        verdicts[SUM_CHECK] = {
            key: Verdict(
                r.stats.not_summing == 0,
                f"{key}: {r.stats.not_summing:,} rows do not sum to 1.",
                {"not_summing": r.stats.not_summing},
            )
            for key, r in scored.items()
        }
    verdicts[DRIFT_CHECK] = {
        key: _drift_verdict(key, psi, reference, psi_threshold)
        for key, (psi, reference) in drift.items()
    }
    return verdicts


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


def _drift_verdict(key: str, psi: float | None, reference: str | None, threshold: float) -> Verdict:
    if psi is None:
        return Verdict(True, f"{key}: no earlier partition to compare with yet.")
    return Verdict(
        psi <= threshold,
        f"{key}: PSI {psi:.4f} against {reference} (threshold {threshold}).",
        {"psi": psi, "threshold": threshold, "reference_partition": str(reference)},
    )


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
