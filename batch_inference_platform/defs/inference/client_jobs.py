"""Client requests as Dagster runs: score a tenant's selection of a deployment's partitions with
the deployment's model (the version or alias the request names), into a table under the
tenant's output root - on the configured engine.

The deployment decides how: its output kind (the model is bound to it), its identity columns
(key and partition column, copied onto every prediction) and its partitioning (the request's
days select its partitions: daily, those days; hourly, every hour of them; unpartitioned, the
whole table)."""

import datetime as dt

import dagster as dg

from batch_inference_platform.defs.metadata import TenantOutputMetadata
from batch_inference_platform.defs.resources import (
    ClientRequestsResource,
    LakeResource,
    ModelRegistryResource,
    ScoringEngineResource,
)
from batch_inference_platform.defs.resources.client_requests import CLIENT_JOB
from batch_inference_platform.lib.deployments.partitioning import Partitioning
from batch_inference_platform.lib.deployments.spec import Deployment
from batch_inference_platform.lib.lake.tables import DeltaLocation, TableNotFoundError, snapshot
from batch_inference_platform.lib.registry.adapters import OutputMismatchError
from batch_inference_platform.lib.registry.client import ModelNotFoundError
from batch_inference_platform.lib.registry.compatibility import input_names, signature_problems
from batch_inference_platform.lib.registry.loader import load_scorer
from batch_inference_platform.lib.registry.references import (
    ModelReferenceError,
    parse_model_reference,
)
from batch_inference_platform.lib.scoring.request import ModelRef, ScoringRequest
from batch_inference_platform.lib.tenants import AccessDenied

OUTPUT_ASSET_PREFIX = "tenants"


class ClientRequestConfig(dg.Config):
    """One accepted client request (from ``batch-inference-input``)."""

    job_id: str
    tenant: str
    deployment: str
    model: str
    feature_table: str
    start_date: str | None = None
    """First day (YYYY-MM-DD); None for an unpartitioned deployment (its whole table)."""
    end_date: str | None = None
    output_table: str


def output_asset_key(tenant: str, table: str) -> dg.AssetKey:
    """The catalog key of a tenant's output table, e.g. ``tenants/acme/scores``."""
    return dg.AssetKey([OUTPUT_ASSET_PREFIX, tenant, *table.split("/")])


def selected_keys(
    partitioning: Partitioning, keys: list[str], first: dt.date | None, last: dt.date | None
) -> list[str]:
    """The partitions among ``keys`` the request's days select: those days (daily), every
    hour of them (hourly), all (unpartitioned)."""
    if not partitioning.partitioned:
        return list(keys)
    if first is None or last is None:
        return []
    selected = []
    for key in keys:
        value = partitioning.value(key)
        day = value.date() if isinstance(value, dt.datetime) else value
        if first <= day <= last:
            selected.append(key)
    return selected


def _deployment(client_requests: ClientRequestsResource, config: ClientRequestConfig) -> Deployment:
    declared = client_requests.deployments
    deployment = declared.get(config.deployment)
    if deployment is None:
        known = ", ".join(sorted(declared)) or "none"
        raise dg.Failure(
            f"job {config.job_id}: unknown deployment {config.deployment!r} (declared: {known})"
        )
    return deployment


def _day(text: str | None) -> dt.date | None:
    return dt.date.fromisoformat(text) if text else None


@dg.op(description="Score the request's partitions and commit each into the tenant's table.")
def score_client_request(
    context: dg.OpExecutionContext,
    config: ClientRequestConfig,
    client_requests: ClientRequestsResource,
    lake: LakeResource,
    registry: ModelRegistryResource,
    engine: ScoringEngineResource,
) -> dict:
    job = f"job {config.job_id}"
    tenant = client_requests.tenants.get(config.tenant)
    if tenant is None:
        raise dg.Failure(f"{job}: unknown tenant {config.tenant!r}")
    deployment = _deployment(client_requests, config)
    partitioning = deployment.partitioning
    try:
        tenant.deployment(deployment.name)
        source = f"{lake.root.rstrip('/')}/{tenant.input_table(config.feature_table)}"
        target = tenant.output_uri(config.output_table)
        reference = parse_model_reference(config.model)
        if reference.name != deployment.model_name:
            raise ModelReferenceError(
                f"model {reference.name!r} is not the model of deployment "
                f"{deployment.name!r} ({deployment.model_name!r})"
            )
        version = reference.resolve(registry.registry)
    except (AccessDenied, ModelReferenceError, ModelNotFoundError) as error:
        raise dg.Failure(f"{job}: {error}") from error
    options = lake.options or None
    try:
        features = snapshot(DeltaLocation(source, options), partitioning)
    except TableNotFoundError as error:
        raise dg.Failure(f"{job}: {error}") from error
    missing = [name for name in deployment.identity if features.schema.get_field_index(name) < 0]
    if missing:
        raise dg.Failure(
            f"{job}: {config.feature_table} lacks deployment {deployment.name}'s identity "
            f"columns {', '.join(missing)} (key {', '.join(deployment.key)}"
            + (f", partition {partitioning.column})" if partitioning.column else ")")
        )
    signature = registry.registry.signature(version)
    problems = signature_problems(signature, features.schema)
    if problems or signature is None:
        raise dg.Failure(
            f"{job}: {version.uri} does not fit {config.feature_table}: "
            + "; ".join(problems or ["no input signature"])
        )
    first, last = _day(config.start_date), _day(config.end_date)
    keys = selected_keys(partitioning, features.partitions(), first, last)
    if not keys:
        span = f"from {first} to {last}" if partitioning.partitioned else "(it is empty)"
        raise dg.Failure(f"{job}: {config.feature_table} has no partitions {span}")
    try:
        # Bind (not compile) here: the engine compiles where it scores.
        bound = load_scorer(
            registry.registry, version, deployment.output, lambda: features.batches(keys[0])
        )
    except OutputMismatchError as error:
        raise dg.Failure(f"{job}: {version.uri}: {error}") from error
    request = ScoringRequest(
        keys=keys,
        identity=deployment.identity,
        partitioning=partitioning.to_json(),
        validated_uri=source,
        predictions_uri=target,
        model=ModelRef(version.name, version.version, registry.tracking_uri, registry.registry_uri),
        feature_names=[
            n for n in input_names(signature) if features.schema.get_field_index(n) >= 0
        ],
        output=bound.output.to_json(),
        dagster_run_id=context.run_id,
        model_cache_dir=registry.model_cache_dir,
        commit_metadata={
            key: {
                "dagster_run_id": context.run_id,
                "partition": key,
                "job_id": config.job_id,
                "tenant": tenant.id,
                "deployment": deployment.name,
                "model_name": version.name,
                "model_version": str(version.version),
            }
            for key in keys
        },
        storage_options=dict(lake.storage_options),
        azure_auth=lake.azure_auth,
    )
    outcome = engine.score(context, request, lake=lake, registry=registry)
    rows = sum(report.rows for report in outcome.scored.values())
    scored = list(outcome.scored)
    if partitioning.partitioned:
        scored.sort(key=partitioning.value)
    record = TenantOutputMetadata(
        job_id=config.job_id,
        tenant=tenant.id,
        table_uri=target,
        partitions=tuple(scored),
        rows=rows,
        model_name=version.name,
        model_version=version.version,
        deployment=deployment.name,
    )
    if outcome.scored:
        context.log_event(
            dg.AssetMaterialization(
                asset_key=output_asset_key(tenant.id, config.output_table),
                description=f"job {config.job_id} for tenant {tenant.id} "
                f"(deployment {deployment.name})",
                metadata={**record.to_metadata(), **outcome.metadata},
            )
        )
    summary = {
        "job_id": config.job_id,
        "tenant": tenant.id,
        "deployment": deployment.name,
        "table": target,
        "partitions": list(record.partitions),
        "rows": rows,
        "model_name": version.name,
        "model_version": version.version,
    }
    if outcome.errors:
        report = "; ".join(
            f"{e.key}: {', '.join(e.files) or '-'}: {e.error}" for e in outcome.errors
        )
        failed = len(outcome.errors)
        raise dg.Failure(
            f"{job}: {failed} of {len(keys)} partitions failed: {report}",
            metadata={**summary, "failed_partitions": [e.key for e in outcome.errors]},
        )
    return summary


@dg.job(
    name=CLIENT_JOB,
    description="A client's batch inference request (POST /api/v1/batch/inference) for one "
    "deployment.",
)
def client_inference_job() -> None:
    score_client_request()
