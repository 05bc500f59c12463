"""Model versions: the registry's champion, checked against the data it will score."""

import datetime as dt
from collections.abc import Iterable, Iterator

import dagster as dg
import pyarrow as pa

from batch_inference_platform.defs.features.assets import FEATURES_KEY
from batch_inference_platform.defs.models.serving import ServingModel
from batch_inference_platform.defs.ops.alerts import AlertsResource
from batch_inference_platform.defs.partitions import Stopwatch
from batch_inference_platform.defs.resources import LakeResource, ModelRegistryResource
from batch_inference_platform.defs.validation.assets import VALIDATED_KEY
from batch_inference_platform.lib.alerts import Alert
from batch_inference_platform.lib.features.contract import validated_schema
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

MODEL_VERSIONS_KEY = dg.AssetKey("model_versions")
DEMO_MODEL_KEY = dg.AssetKey("demo_model")
SERVING_CHECK = "champion_passes_validation"
REFUSED_TAG = "batch_inference.refused"
"""Set on a version the platform refused to serve, with the reasons (shown in the MLflow UI)."""
SMOKE_ROWS = 1024
"""Validated rows a candidate version scores before it may serve."""


class DemoTrainingConfig(dg.Config):
    """What the local demo model is trained on and how big it is."""

    training_partition: str | None = None
    """Feature partition (YYYY-MM-DD) to train on; default the latest one."""
    max_rows: int = 200_000
    num_boost_round: int = 200
    num_leaves: int = 63


@dg.asset(
    key=DEMO_MODEL_KEY,
    deps=[FEATURES_KEY],
    group_name="models",
    kinds={"mlflow", "lightgbm"},
    description="Locally only: a LightGBM default-risk model trained on the generated features, "
    "registered in MLflow with its signature and given the serving alias.",
)
def demo_model(
    context: dg.AssetExecutionContext,
    config: DemoTrainingConfig,
    lake: LakeResource,
    registry: ModelRegistryResource,
) -> dg.MaterializeResult:
    watch = Stopwatch()
    features = lake.layout.features
    table = features.open()
    available = sorted(p["event_date"] for p in table.partitions())
    if not available:
        raise dg.Failure(f"no feature partitions at {features.uri}; materialize feature_tables")
    partition = config.training_partition or available[-1]
    if partition not in available:
        raise dg.Failure(f"training partition {partition} not in {features.uri} ({available})")
    batches = read_partition(features, dt.date.fromisoformat(partition))
    training = pa.Table.from_batches(_first_rows(batches, config.max_rows))
    version, trained = train_and_register(
        registry.registry,
        model_name=registry.model_name,
        alias=registry.alias,
        experiment=registry.experiment,
        artifact_root=registry.artifact_root,
        training_data=training,
        data_version=f"{features.uri}@v{table.version()}/{partition}",
        params=TrainingParams(num_boost_round=config.num_boost_round, num_leaves=config.num_leaves),
    )
    context.log.info(("trained and registered" if trained else "reused") + f" {version.uri}")
    return dg.MaterializeResult(
        metadata={
            **watch.metadata(training.num_rows),
            "model_version": version.version,
            "newly_trained": trained,
            "training_partition": partition,
            "model_uri": dg.MetadataValue.url(registry.link(version)),
            **registry.registry.training_metrics(version),
        }
    )


def _first_rows(batches: Iterable[pa.RecordBatch], limit: int) -> Iterator[pa.RecordBatch]:
    """At most ``limit`` rows of a stream (the demo model trains on a bounded sample)."""
    taken = 0
    for batch in batches:
        if taken >= limit:
            return
        batch = batch.slice(0, limit - taken)
        taken += batch.num_rows
        yield batch


def build_model_versions(*, trained_locally: bool) -> dg.AssetsDefinition:
    """The ``model_versions`` asset; locally it also waits for the demo model."""
    deps = [VALIDATED_KEY, DEMO_MODEL_KEY] if trained_locally else [VALIDATED_KEY]

    @dg.asset(
        key=MODEL_VERSIONS_KEY,
        deps=deps,
        group_name="models",
        kinds={"mlflow"},
        description="The registered model version that scores: the holder of the serving alias "
        "if its input signature fits the validated feature schema and it passes the smoke test "
        "(loads in time, its output fits the declared kind, scores validated rows into finite "
        "predictions of that kind), otherwise - loudly, tagged in MLflow and alerted - the last "
        "approved champion (the version that last served successfully).",
        check_specs=[dg.AssetCheckSpec(SERVING_CHECK, asset=MODEL_VERSIONS_KEY)],
    )
    def model_versions(
        context: dg.AssetExecutionContext,
        lake: LakeResource,
        registry: ModelRegistryResource,
        alerts: AlertsResource,
    ):
        watch = Stopwatch()
        try:
            schema = table_schema(lake.layout.validated)
        except TableNotFoundError as error:
            raise dg.Failure(f"{error}: materialize validated_features first") from error
        client = registry.registry
        validated = snapshot(lake.layout.validated)
        latest = validated.days()[-1]
        sample = first_rows(validated.batches(latest), SMOKE_ROWS)
        if sample is None:
            raise dg.Failure(f"no validated rows for {latest} to test the model on")
        target = lake.layout.predictions(registry.model_name)
        probe = ServingProbe(
            load=lambda version: registry.scorer(version, lambda: [sample]),
            sample=sample,
            validated=validated_schema(),  # the contract's nullability (Delta keeps none)
            max_load_seconds=registry.max_load_seconds,
            predictions=table_schema(target) if target.exists() else None,
        )

        try:
            resolution = resolve_serving_version(
                client, registry.model_name, registry.alias, schema, probe
            )
        except NoCompatibleVersionError as error:
            _refuse(context, registry, alerts, error.rejected, str(error))
            raise dg.Failure(str(error)) from error
        except ModelNotFoundError as error:
            raise dg.Failure(str(error)) from error
        serving = resolution.serving
        rejected = "; ".join(f"v{v}: {', '.join(p)}" for v, p in resolution.rejected.items())
        if resolution.rejected:
            refusal = (
                f"refused {registry.model_name}@{registry.alias} = "
                f"v{resolution.alias_holder.version} ({rejected}); v{serving.version} serves"
            )
            _refuse(context, registry, alerts, resolution.rejected, refusal)
        context.log.info(f"{serving.uri} serves: {resolution.reason}")
        signature = client.signature(serving)
        scorer = probe.scorers[serving.version]
        manifest = scorer.compiled.manifest
        if scorer.compiled.predict is None:
            context.log.warning(f"{serving.uri} scores natively: {manifest.reason}")
        passed = probe.results[serving.version]
        yield dg.Output(
            ServingModel(serving, registry.alias, resolution.alias_holder.version, scorer.output),
            metadata={
                "seconds": round(watch.seconds, 3),
                "model_name": serving.name,
                "model_version": serving.version,
                "alias": registry.alias,
                "alias_holder_version": resolution.alias_holder.version,
                "fell_back": resolution.fell_back,
                "serving_reason": resolution.reason,
                "output": dg.MetadataValue.json(scorer.output.to_json()),
                "model_input": "float64 matrix" if scorer.inputs.matrix else "typed DataFrame",
                "run_id": serving.run_id or "",
                "model_uri": dg.MetadataValue.url(registry.link(serving)),
                "signature": dg.MetadataValue.json(signature.to_dict() if signature else {}),
                "scoring_engine": scorer.engine,
                "compile_seconds": round(manifest.compile_seconds, 2),
                "compiled_from_cache": scorer.compiled.from_cache,
                "compile_verification": manifest.reason,
                "scoring_batch_rows": manifest.batch_rows,
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


def _refuse(
    context: dg.AssetExecutionContext,
    registry: ModelRegistryResource,
    alerts: AlertsResource,
    rejected: dict[int, list[str]],
    message: str,
) -> None:
    """Tag each refused version in MLflow, log the refusal as an error and alert on-call."""
    client = registry.registry
    for version, problems in rejected.items():
        client.tag_version(registry.model_name, version, REFUSED_TAG, "; ".join(problems))
    context.log.error(message)
    alerts.alert(
        Alert(
            title=f"{registry.model_name} v{max(rejected)} refused",
            job_name=context.job_name,
            run_id=context.run_id,
            error=message,
            link=alerts.link(context.run_id),
            at=dt.datetime.now(dt.UTC),
            where={"model": registry.model_name, "alias": registry.alias},
            severity="warning",
        )
    )
