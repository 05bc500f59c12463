"""Client requests as Dagster runs: score a tenant's date range of a feature table with the
model it names, into a table under the tenant's output root - on the configured engine."""

import datetime as dt

import dagster as dg

from batch_inference_platform.defs.inference.engines import ScoringEngineResource
from batch_inference_platform.defs.resources import (
    ClientRequestsResource,
    LakeResource,
    ModelRegistryResource,
)
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

CLIENT_JOB = "client_inference_job"
OUTPUT_ASSET_PREFIX = "tenants"


class ClientRequestConfig(dg.Config):
    """One accepted client request (from ``batch-inference-input``)."""

    job_id: str
    tenant: str
    model: str
    feature_table: str
    start_date: str
    end_date: str
    output_table: str


def output_asset_key(tenant: str, table: str) -> dg.AssetKey:
    """The catalog key of a tenant's output table, e.g. ``tenants/acme/scores``."""
    return dg.AssetKey([OUTPUT_ASSET_PREFIX, tenant, *table.split("/")])


@dg.op(description="Score the request's days and commit each into the tenant's output table.")
def score_client_request(
    context: dg.OpExecutionContext,
    config: ClientRequestConfig,
    client_requests: ClientRequestsResource,
    lake: LakeResource,
    registry: ModelRegistryResource,
    engine: ScoringEngineResource,
) -> dict:
    tenant = client_requests.tenants.get(config.tenant)
    if tenant is None:
        raise dg.Failure(f"job {config.job_id}: unknown tenant {config.tenant!r}")
    try:
        source = f"{lake.root.rstrip('/')}/{tenant.input_table(config.feature_table)}"
        target = tenant.output_uri(config.output_table)
        reference = parse_model_reference(config.model)
        version = reference.resolve(registry.registry)
    except (AccessDenied, ModelReferenceError, ModelNotFoundError) as error:
        raise dg.Failure(f"job {config.job_id}: {error}") from error
    options = lake.options or None
    try:
        features = snapshot(DeltaLocation(source, options))
    except TableNotFoundError as error:
        raise dg.Failure(f"job {config.job_id}: {error}") from error
    signature = registry.registry.signature(version)
    problems = signature_problems(signature, features.schema)
    if problems or signature is None:
        raise dg.Failure(
            f"job {config.job_id}: {version.uri} does not fit {config.feature_table}: "
            + "; ".join(problems or ["no input signature"])
        )
    first, last = dt.date.fromisoformat(config.start_date), dt.date.fromisoformat(config.end_date)
    days = [day for day in features.days() if first <= day <= last]
    if not days:
        raise dg.Failure(
            f"job {config.job_id}: {config.feature_table} has no partitions from {first} to {last}"
        )
    try:
        # Bind (not compile) here: the engine compiles where it scores.
        bound = load_scorer(
            registry.registry, version, registry.output, lambda: features.batches(days[0])
        )
    except OutputMismatchError as error:
        raise dg.Failure(f"job {config.job_id}: {version.uri}: {error}") from error
    request = ScoringRequest(
        days=[day.isoformat() for day in days],
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
            day.isoformat(): {
                "dagster_run_id": context.run_id,
                "partition": day.isoformat(),
                "job_id": config.job_id,
                "tenant": tenant.id,
                "model_name": version.name,
                "model_version": str(version.version),
            }
            for day in days
        },
        storage_options=dict(lake.storage_options),
        azure_auth=lake.azure_auth,
    )
    outcome = engine.score(context, request, lake=lake, registry=registry)
    rows = sum(report.rows for report in outcome.scored.values())
    summary = {
        "job_id": config.job_id,
        "tenant": tenant.id,
        "table": target,
        "partitions": sorted(day.isoformat() for day in outcome.scored),
        "rows": rows,
        "model_name": version.name,
        "model_version": version.version,
    }
    if outcome.scored:
        context.log_event(
            dg.AssetMaterialization(
                asset_key=output_asset_key(tenant.id, config.output_table),
                description=f"job {config.job_id} for tenant {tenant.id}",
                metadata={**summary, "dagster/row_count": rows, **outcome.metadata},
            )
        )
    if outcome.errors:
        report = "; ".join(
            f"{e.day}: {', '.join(e.files) or '-'}: {e.error}" for e in outcome.errors
        )
        failed = len(outcome.errors)
        raise dg.Failure(
            f"job {config.job_id}: {failed} of {len(days)} partitions failed: {report}",
            metadata={**summary, "failed_partitions": [str(e.day) for e in outcome.errors]},
        )
    return summary


@dg.job(
    name=CLIENT_JOB,
    description="A client's batch inference request (POST /api/v1/batch/inference).",
)
def client_inference_job() -> None:
    score_client_request()
