"""Model versions: the registry's champion, checked against the data it will score."""

import datetime as dt
from collections.abc import Iterable, Iterator

import dagster as dg
import pyarrow as pa
from mlflow.models import ModelSignature
from mlflow.types import Schema

from batch_inference_platform.defs import display
from batch_inference_platform.defs.models.sensors import PROMOTION_TAG, REQUESTED_VERSION_TAG
from batch_inference_platform.defs.models.serving import OUTCOME_TAG, ServingModel
from batch_inference_platform.defs.partitions import Stopwatch
from batch_inference_platform.defs.resources import (
    AlertsResource,
    LakeResource,
    ModelRegistryResource,
)
from batch_inference_platform.defs.scope import DeploymentScope
from batch_inference_platform.defs.validation.assets import contract_of
from batch_inference_platform.lib.alerts import Alert
from batch_inference_platform.lib.deployments.spec import Deployment
from batch_inference_platform.lib.features.generators import GENERATORS
from batch_inference_platform.lib.lake.tables import (
    TableNotFoundError,
    read_partition,
    snapshot,
    table_schema,
)
from batch_inference_platform.lib.registry.client import ModelNotFoundError
from batch_inference_platform.lib.registry.probe import ServingProbe
from batch_inference_platform.lib.registry.resolution import (
    NoCompatibleVersionError,
    resolve_serving_version,
)
from batch_inference_platform.lib.registry.training import TrainingParams, train_and_register
from batch_inference_platform.lib.scoring.inputs import first_rows

SERVING_CHECK = "champion_passes_validation"
REFUSED_TAG = "batch_inference.refused"
"""Set on a version the platform refused to serve, with the reasons (shown in the MLflow UI)."""
SMOKE_ROWS = 1024
"""Validated rows a candidate version scores before it may serve."""


class DemoTrainingConfig(dg.Config):
    """What the local demo model is trained on and how big it is."""

    training_partition: str | None = None
    """Feature partition (its key) to train on; default the latest one."""
    max_rows: int = 200_000
    num_boost_round: int = 200
    num_leaves: int = 63


def build_demo_model(scope: DeploymentScope) -> dg.AssetsDefinition:
    """``<name>/demo_model``: locally, the deployment's demo model trained on its generated
    features, registered in MLflow with its signature and given the serving alias."""
    deployment = scope.deployment
    assert deployment.generator is not None
    source = GENERATORS[deployment.generator]

    @dg.asset(
        key=scope.demo_model,
        deps=[scope.features],
        group_name=scope.group,
        kinds={"mlflow"},
        description=f"Locally only: the {deployment.generator} demo model "
        f"({deployment.output.kind.value}) trained on {deployment.name}'s generated features, "
        f"registered as {deployment.model_name} with its signature and given the alias "
        f"{deployment.alias}.",
    )
    def demo_model(
        context: dg.AssetExecutionContext,
        config: DemoTrainingConfig,
        lake: LakeResource,
        registry: ModelRegistryResource,
    ) -> dg.MaterializeResult:
        watch = Stopwatch()
        partitioning = deployment.partitioning
        features = lake.layout.deployment(deployment).features
        available = snapshot(features, partitioning).partitions() if features.exists() else []
        if not available:
            raise dg.Failure(
                f"no feature partitions at {features.uri}; materialize "
                f"{scope.features.to_user_string()}"
            )
        partition = config.training_partition or available[-1]
        if partition not in available:
            raise dg.Failure(f"training partition {partition} not in {features.uri} ({available})")
        batches = read_partition(features, partitioning, partition)
        training = pa.Table.from_batches(_first_rows(batches, config.max_rows))
        version, trained = train_and_register(
            registry.registry,
            source=source,
            model_name=deployment.model_name,
            alias=deployment.alias,
            experiment=registry.experiment,
            artifact_root=registry.artifact_root,
            training_data=training,
            data_version=f"{features.uri}@v{features.open().version()}/{partition}",
            params=TrainingParams(
                num_boost_round=config.num_boost_round, num_leaves=config.num_leaves
            ),
        )
        context.log.info(("trained and registered" if trained else "reused") + f" {version.uri}")
        return dg.MaterializeResult(
            metadata={
                **watch.metadata(training.num_rows),
                "model_version": display.identifier(version.version),
                "newly_trained": trained,
                "training_partition": partition,
                "model_uri": display.link(registry.link(version)),
                "mlflow_run": display.link(registry.run_link(version.run_id or "")),
                **registry.registry.training_metrics(version),
            }
        )

    return demo_model


def _first_rows(batches: Iterable[pa.RecordBatch], limit: int) -> Iterator[pa.RecordBatch]:
    """At most ``limit`` rows of a stream (the demo model trains on a bounded sample)."""
    taken = 0
    for batch in batches:
        if taken >= limit:
            return
        batch = batch.slice(0, limit - taken)
        taken += batch.num_rows
        yield batch


def build_model_versions(scope: DeploymentScope, *, trained_locally: bool) -> dg.AssetsDefinition:
    """``<name>/model_versions``; locally it also waits for the demo model."""
    deployment = scope.deployment
    deps = [scope.validated, scope.demo_model] if trained_locally else [scope.validated]

    @dg.asset(
        key=scope.model_versions,
        deps=deps,
        group_name=scope.group,
        kinds={"mlflow"},
        output_required=False,  # a run pinned to a version the alias has left scores nothing
        description=f"{deployment.name}: the version of {deployment.model_name} that scores: "
        "the holder of the serving alias if its input signature fits the validated feature "
        "schema and it passes the smoke test "
        "(loads in time, its output fits the declared kind, scores validated rows into finite "
        "predictions of that kind), otherwise - loudly, tagged in MLflow and alerted - the last "
        "approved champion (the version that last served successfully). A run requested for a "
        "promotion (run tag bip/requested_model_version) scores that version only: if the "
        "alias has moved on, it scores nothing and says so.",
        check_specs=[
            dg.AssetCheckSpec(
                SERVING_CHECK,
                asset=scope.model_versions,
                description=f"The holder of {deployment.model_name}@{deployment.alias} serves: "
                "it fits the validated schema and passes the smoke test (a warning when an "
                "older approved champion serves instead).",
            )
        ],
    )
    def model_versions(
        context: dg.AssetExecutionContext,
        lake: LakeResource,
        registry: ModelRegistryResource,
        alerts: AlertsResource,
    ):
        watch = Stopwatch()
        tables = lake.layout.deployment(deployment)
        try:
            schema = table_schema(tables.validated)
        except TableNotFoundError as error:
            raise dg.Failure(
                f"{error}: materialize {scope.validated.to_user_string()} first"
            ) from error
        client = registry.registry
        requested = _requested_version(context)
        if requested is not None:
            try:
                holder = client.by_alias(deployment.model_name, deployment.alias).version
            except ModelNotFoundError as error:
                raise dg.Failure(str(error)) from error
            if holder != requested:
                yield from _superseded(context, deployment, requested, holder)
                return
        validated = snapshot(tables.validated, deployment.partitioning)
        latest = validated.partitions()[-1]
        sample = first_rows(validated.batches(latest), SMOKE_ROWS)
        if sample is None:
            raise dg.Failure(f"no validated rows for {latest} to test the model on")
        contract = contract_of(deployment, table_schema(tables.features), registry)
        target = tables.predictions
        probe = ServingProbe(
            load=lambda version: registry.scorer(version, lambda: [sample], deployment.output),
            sample=sample,
            validated=contract.validated_schema(),  # the contract's nullability (Delta: none)
            max_load_seconds=registry.max_load_seconds,
            predictions=table_schema(target) if target.exists() else None,
        )

        try:
            resolution = resolve_serving_version(
                client, deployment.model_name, deployment.alias, schema, probe
            )
        except NoCompatibleVersionError as error:
            _refuse(context, deployment, registry, alerts, error.rejected, str(error))
            raise dg.Failure(str(error)) from error
        except ModelNotFoundError as error:
            raise dg.Failure(str(error)) from error
        holder = resolution.alias_holder.version
        if requested is not None and holder != requested:
            yield from _superseded(context, deployment, requested, holder)
            return
        serving = resolution.serving
        rejected = "; ".join(f"v{v}: {', '.join(p)}" for v, p in resolution.rejected.items())
        if resolution.rejected:
            refusal = (
                f"refused {deployment.model_name}@{deployment.alias} = "
                f"v{resolution.alias_holder.version} ({rejected}); v{serving.version} serves"
            )
            _refuse(context, deployment, registry, alerts, resolution.rejected, refusal)
        if requested is not None and serving.version != requested:
            # A promotion's run scores the promoted version or nothing: the fallback champion
            # already wrote these days (or will, in a run of its own).
            yield from _not_scored(
                context,
                requested,
                f"refused: this run was requested for {deployment.model_name} v{requested}, "
                f"which failed validation ({rejected}); v{serving.version} keeps serving and "
                "nothing is re-scored",
                f"refused v{requested}",
            )
            return
        context.log.info(f"{serving.uri} serves: {resolution.reason}")
        signature = client.signature(serving)
        scorer = probe.scorers[serving.version]
        manifest = scorer.compiled.manifest
        if scorer.compiled.predict is None:
            context.log.warning(f"{serving.uri} scores natively: {manifest.reason}")
        passed = probe.results[serving.version]
        yield dg.Output(
            ServingModel(
                serving,
                deployment.alias,
                resolution.alias_holder.version,
                scorer.output,
                requested_version=requested,
                promotion=context.run.tags.get(PROMOTION_TAG),
            ),
            metadata={
                "seconds": round(watch.seconds, 3),
                "model_name": serving.name,
                "model_version": display.identifier(serving.version),
                "deployment": deployment.name,
                "alias": deployment.alias,
                "alias_holder_version": display.identifier(resolution.alias_holder.version),
                **(
                    {}
                    if requested is None
                    else {"requested_model_version": display.identifier(requested)}
                ),
                "fell_back": resolution.fell_back,
                "serving_reason": resolution.reason,
                "output": scorer.output.describe(),
                "model_input": "float64 matrix" if scorer.inputs.matrix else "typed DataFrame",
                "mlflow_run": display.link(registry.run_link(serving.run_id or "")),
                "model_uri": display.link(registry.link(serving)),
                **_signature_metadata(signature),
                "scoring_engine": scorer.engine,
                # What this step paid: 0 s when a cache (disk or this process) served it.
                "compile_seconds": round(scorer.compiled.compile_seconds_now(watch.started), 2),
                "compiled_from_cache": scorer.compiled.served_from_cache(watch.started),
                "compile_verification": manifest.reason,
                "scoring_batch_rows": display.identifier(manifest.batch_rows),
                "smoke_rows": passed.rows,
                "smoke_load_seconds": round(passed.load_seconds, 3),
                "smoke_predict_seconds": round(passed.predict_seconds, 4),
                "refused": dg.MetadataValue.json(
                    {f"v{v}": p for v, p in resolution.rejected.items()}
                ),
                **client.training_metrics(serving),
            },
        )
        yield dg.AssetCheckResult(
            check_name=SERVING_CHECK,
            passed=not resolution.fell_back,
            severity=dg.AssetCheckSeverity.WARN,
            description=(
                f"Fell back from v{resolution.alias_holder.version}: {rejected}"
                if resolution.fell_back
                else f"v{serving.version} fits the validated feature schema and passes the "
                f"smoke test ({passed.rows} rows, loaded in {passed.load_seconds:.1f} s)."
            ),
            metadata={
                "serving_version": serving.version,
                "alias_holder_version": resolution.alias_holder.version,
            },
        )

    return model_versions


def _requested_version(context: dg.AssetExecutionContext) -> int | None:
    """The version this run was requested for by a promotion (None: serve the alias holder)."""
    value = context.run.tags.get(REQUESTED_VERSION_TAG)
    if value is None:
        return None
    if not value.isdigit():
        raise dg.Failure(f"run tag {REQUESTED_VERSION_TAG}={value!r} is not a version number")
    return int(value)


def _superseded(
    context: dg.AssetExecutionContext, deployment: Deployment, requested: int, holder: int
) -> Iterator[dg.AssetCheckResult]:
    """The alias left the requested version before this run scored: nothing is scored (the
    steps after this one are skipped), the run's tags and log say why, and the newer move
    re-scores in a run of its own."""
    name, alias = deployment.model_name, deployment.alias
    reason = (
        f"superseded: this run was requested for {name} v{requested}, but {name}@{alias} "
        f"now points at v{holder}; nothing is scored (the move to v{holder} re-scores in its "
        "own run)"
    )
    yield from _not_scored(context, requested, reason, f"superseded by v{holder}", holder)


def _not_scored(
    context: dg.AssetExecutionContext,
    requested: int,
    reason: str,
    outcome: str,
    holder: int | None = None,
) -> Iterator[dg.AssetCheckResult]:
    """End a promotion's run without scoring (the steps after this one are skipped): its log,
    its ``bip/outcome`` tag and the serving check say why."""
    context.log.warning(reason)
    context.instance.add_run_tags(context.run_id, {OUTCOME_TAG: outcome})
    figures = {"requested_version": requested}
    if holder is not None:
        figures["alias_holder_version"] = holder
    yield dg.AssetCheckResult(
        check_name=SERVING_CHECK,
        passed=False,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"Not checked: {reason}.",
        metadata=figures,
    )


def _refuse(
    context: dg.AssetExecutionContext,
    deployment: Deployment,
    registry: ModelRegistryResource,
    alerts: AlertsResource,
    rejected: dict[int, list[str]],
    message: str,
) -> None:
    """Tag each refused version in MLflow, log the refusal as an error and alert on-call."""
    client = registry.registry
    for version, problems in rejected.items():
        client.tag_version(deployment.model_name, version, REFUSED_TAG, "; ".join(problems))
    context.log.error(message)
    alerts.alert(
        Alert(
            title=f"{deployment.name}: {deployment.model_name} v{max(rejected)} refused",
            job_name=context.job_name,
            run_id=context.run_id,
            error=message,
            link=alerts.link(context.run_id),
            at=dt.datetime.now(dt.UTC),
            where={
                "deployment": deployment.name,
                "model": deployment.model_name,
                "alias": deployment.alias,
            },
            severity="warning",
        )
    )


def _signature_metadata(signature: ModelSignature | None) -> dict[str, dg.MetadataValue]:
    """The version's signature as column tables (inputs, outputs), readable in the UI."""
    if signature is None:
        return {"signature": dg.MetadataValue.text("none: the version has no signature")}
    values = {"signature_inputs": _spec_table(signature.inputs)}
    if signature.outputs is not None:
        values["signature_outputs"] = _spec_table(signature.outputs)
    return values


def _spec_table(schema: Schema) -> dg.MetadataValue:
    columns = []
    for index, spec in enumerate(schema.inputs):
        described = spec.to_dict()
        kind = described.get("type", "")
        if kind == "tensor":
            kind = f"tensor {described.get('tensor-spec', {})}"
        columns.append(
            dg.TableColumn(
                name=str(described.get("name") or f"#{index}"),
                type=str(kind),
                constraints=dg.TableColumnConstraints(nullable=not described.get("required", True)),
            )
        )
    return dg.MetadataValue.table_schema(dg.TableSchema(columns=columns))
