"""The real-time assets, on the schedule in ``batch-inference.realtime.schedule``.

``customer_activity_windows`` consumes the event topics in bounded batches and keeps each
tumbling window's events (deduplicated) and per-customer aggregates in Delta; the consumed
offsets are part of the events commit, so they advance exactly when events land.
``customer_insights`` scores the customers of the changed windows with the registered model,
chooses the next best action, publishes the insights and swaps the Redis cache atomically.
"""

import base64
import datetime as dt
import json

import dagster as dg

from batch_inference_platform.defs import display
from batch_inference_platform.defs.models.assets import SMOKE_ROWS
from batch_inference_platform.defs.resources import (
    LakeResource,
    ModelRegistryResource,
    RealtimeResource,
)
from batch_inference_platform.defs.scope import PLATFORM_GROUP, DeploymentScope
from batch_inference_platform.defs.validation.assets import contract_of
from batch_inference_platform.lib.deployments.spec import Deployment
from batch_inference_platform.lib.lake.tables import snapshot, table_schema
from batch_inference_platform.lib.messaging.kafka import KafkaPublisher, read_batch
from batch_inference_platform.lib.realtime.aggregates import AGGREGATES_SCHEMA, aggregate
from batch_inference_platform.lib.realtime.ingest import Ingested, ingest, merge_events
from batch_inference_platform.lib.realtime.insights import (
    INSIGHTS_SCHEMA,
    build_insights,
    insights_table,
    latest_per_customer,
)
from batch_inference_platform.lib.realtime.tables import (
    EVENTS_SCHEMA,
    EVENTS_VERSION_KEY,
    OFFSETS_KEY,
    WATERMARK_KEY,
    WINDOWS_KEY,
    consumer_state,
    latest_metadata,
    read_windows,
    replace_windows,
    windows_written_since,
)
from batch_inference_platform.lib.registry.client import ModelNotFoundError
from batch_inference_platform.lib.registry.probe import ServingProbe
from batch_inference_platform.lib.registry.resolution import (
    NoCompatibleVersionError,
    resolve_serving_version,
)
from batch_inference_platform.lib.scoring.inputs import first_rows
from batch_inference_platform.lib.scoring.kernel import Scorer
from batch_inference_platform.lib.scoring.outputs import OutputKind

WINDOWS_KEY_ASSET = dg.AssetKey("customer_activity_windows")
INSIGHTS_KEY = dg.AssetKey("customer_insights")
AGGREGATES_VERSION_KEY = "bip.aggregates_version"


@dg.asset(
    key=WINDOWS_KEY_ASSET,
    group_name=PLATFORM_GROUP,
    kinds={"kafka", "deltalake"},
    description="Journey, transaction and credit-decision events aggregated per customer in "
    "tumbling windows (Delta, partitioned by window); malformed events go to the dead letter "
    "topic, events later than the grace period are counted.",
    check_specs=[
        dg.AssetCheckSpec(
            "no_events_too_late",
            asset=WINDOWS_KEY_ASSET,
            description="Events that arrived after their window closed (window + grace).",
        )
    ],
)
def customer_activity_windows(
    context: dg.AssetExecutionContext, realtime: RealtimeResource, lake: LakeResource
) -> dg.MaterializeResult:
    settings, kafka = realtime.settings, realtime.kafka
    events, aggregates = lake.layout.realtime_events, lake.layout.realtime_aggregates
    state = consumer_state(events)
    records, offsets = {}, {}
    topics = realtime.event_topics()
    budget = max(1, settings.max_batch_messages // len(topics))  # every topic advances
    for kind, topic in topics.items():
        records[kind], offsets[topic] = read_batch(
            kafka, topic, state.offsets.get(topic, {}), max_messages=budget, timeout_seconds=5
        )
    consumed = sum(len(batch) for batch in records.values())
    got = ingest(
        records,
        watermarks=state.watermarks,
        window=settings.window,
        grace=settings.grace,
        now=dt.datetime.now(dt.UTC),
    )
    if got.dead_letters:
        _dead_letter(realtime, got)
    events_version = state.events_version
    if consumed:
        touched = got.windows
        merged = merge_events(read_windows(events, touched), got.rows)
        events_version = replace_windows(
            events,
            touched,
            merged if touched else EVENTS_SCHEMA.empty_table(),
            {
                OFFSETS_KEY: json.dumps(offsets),
                WATERMARK_KEY: json.dumps({t: w.isoformat() for t, w in got.watermarks.items()}),
                WINDOWS_KEY: json.dumps(sorted(touched)),
            },
        )
    seen = latest_metadata(aggregates, EVENTS_VERSION_KEY)
    pending = windows_written_since(events, int(seen) if seen is not None else None)
    aggregates_version = None
    if pending:
        aggregates_version = replace_windows(
            aggregates,
            pending,
            aggregate(read_windows(events, pending), settings.window),
            {EVENTS_VERSION_KEY: str(events_version), WINDOWS_KEY: json.dumps(sorted(pending))},
        )
    context.log.info(
        f"{consumed} events read, {len(got.rows)} in time, {len(got.dead_letters)} dead "
        f"letters, {got.too_late} too late; windows re-aggregated: {sorted(pending)}"
    )
    return dg.MaterializeResult(
        metadata={
            "events_read": consumed,
            "events_in_windows": len(got.rows),
            "dead_lettered": len(got.dead_letters),
            "too_late": got.too_late,
            "late_within_grace": got.late_within_grace,
            "windows_updated": sorted(pending),
            "watermark": got.watermark.isoformat() if got.watermark else "",
            "offsets": dg.MetadataValue.json(offsets),
            "events_version": display.identifier(
                events_version if events_version is not None else "none"
            ),
            "aggregates_version": display.identifier(
                aggregates_version if aggregates_version is not None else "none"
            ),
            **display.table(aggregates.uri, AGGREGATES_SCHEMA),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="no_events_too_late",
                passed=got.too_late == 0,
                severity=dg.AssetCheckSeverity.WARN,
                description=f"{got.too_late} events arrived after their window closed "
                f"(grace {settings.grace})",
                metadata={"too_late": got.too_late},
            )
        ],
    )


def _dead_letter(realtime: RealtimeResource, got: Ingested) -> None:
    """Publish unusable records with the reason before their offsets are committed."""
    topic = realtime.settings.topics.dead_letter
    messages = [
        (
            topic,
            letter.key or letter.source,
            json.dumps(
                {
                    "schema_version": 1,
                    "source": letter.source,
                    "reason": letter.reason,
                    "value_base64": base64.b64encode(letter.value).decode(),
                    "at": dt.datetime.now(dt.UTC).isoformat(),
                }
            ).encode(),
        )
        for letter in got.dead_letters
    ]
    with KafkaPublisher(realtime.kafka) as publisher:
        publisher.publish(messages)


def build_customer_insights(deployment: Deployment) -> dg.AssetsDefinition:
    """``customer_insights``, scoring risk with ``deployment``'s serving model (its one key
    column holds the customer id the events carry)."""

    @dg.asset(
        key=INSIGHTS_KEY,
        deps=[WINDOWS_KEY_ASSET, DeploymentScope(deployment).model_versions],
        group_name=PLATFORM_GROUP,
        kinds={"mlflow", "redis", "kafka", "deltalake"},
        description="Per-customer insights of the changed windows: risk from "
        f"{deployment.name}'s serving model, activity, next best action; published to the "
        "insights topic and swapped atomically into the Redis cache.",
    )
    def customer_insights(
        context: dg.AssetExecutionContext,
        realtime: RealtimeResource,
        lake: LakeResource,
        registry: ModelRegistryResource,
    ) -> dg.MaterializeResult:
        return _insights(context, deployment, realtime, lake, registry)

    return customer_insights


def _insights(
    context: dg.AssetExecutionContext,
    deployment: Deployment,
    realtime: RealtimeResource,
    lake: LakeResource,
    registry: ModelRegistryResource,
) -> dg.MaterializeResult:
    layout, settings = lake.layout, realtime.settings
    aggregates_version = (
        layout.realtime_aggregates.open().version() if layout.realtime_aggregates.exists() else -1
    )  # read before the pending windows: a later commit is left for the next run
    seen = latest_metadata(layout.realtime_insights, AGGREGATES_VERSION_KEY)
    pending = windows_written_since(
        layout.realtime_aggregates, int(seen) if seen is not None else None, aggregates_version
    )
    if not pending:
        return dg.MaterializeResult(metadata={"windows": [], "insights": 0})
    scorer = _serving_scorer(deployment, lake, registry)
    insights = build_insights(
        read_windows(layout.realtime_aggregates, pending),
        scorer=scorer,
        validated=layout.deployment(deployment).validated,
        partitioning=deployment.partitioning,
        key=deployment.key[0],
        generated_at=dt.datetime.now(dt.UTC),
    )
    # Publish first, then record the windows as done: a failure before the commit repeats the
    # publication next run (at least once) instead of never publishing.
    topic = settings.topics.insights
    with KafkaPublisher(realtime.kafka) as publisher:
        publisher.publish(
            [(topic, str(i.customer_id), i.model_dump_json().encode()) for i in insights]
        )
    table = insights_table(insights)
    current = latest_per_customer(layout.realtime_insights, settings.cache_ttl, pending=insights)
    cached = realtime.cache().publish(current, version=context.run_id)
    replace_windows(
        layout.realtime_insights,
        pending,
        table,
        {AGGREGATES_VERSION_KEY: str(aggregates_version), WINDOWS_KEY: json.dumps(sorted(pending))},
    )
    actions: dict[str, int] = {}
    for insight in insights:
        actions[insight.next_best_action] = actions.get(insight.next_best_action, 0) + 1
    return dg.MaterializeResult(
        metadata={
            "windows": sorted(pending),
            "insights": len(insights),
            "next_best_actions": dg.MetadataValue.json(actions),
            "deployment": deployment.name,
            "model_name": scorer.model_name,
            "model_version": display.identifier(scorer.model_version),
            "cache_version": context.run_id,
            "cached_customers": cached,
            **display.table(layout.realtime_insights.uri, INSIGHTS_SCHEMA),
        }
    )


SINGLETON_TAG = "bip/singleton"
"""Runs sharing a value of this tag never overlap (the run queue limits each value to 1)."""

realtime_job = dg.define_asset_job(
    "realtime_insights_job",
    # The windows and, where a deployment serves them, the insights computed from them.
    selection=dg.AssetSelection.assets(WINDOWS_KEY_ASSET).downstream(depth=1)
    & dg.AssetSelection.groups(PLATFORM_GROUP),
    tags={SINGLETON_TAG: "realtime"},  # offsets and windows advance one run at a time
    description="Consume the event topics, update the windows, publish insights and the cache.",
)


def build_realtime_schedule(cron: str) -> dg.ScheduleDefinition:
    """``realtime_insights_job`` on ``batch-inference.realtime.schedule``."""
    return dg.ScheduleDefinition(
        name="realtime_insights_schedule",
        job=realtime_job,
        cron_schedule=cron,
        execution_timezone="UTC",
        description="Aggregates new events and refreshes insights and the Redis cache.",
    )


def _serving_scorer(
    deployment: Deployment, lake: LakeResource, registry: ModelRegistryResource
) -> Scorer:
    """The version that serves the deployment's batch scoring now, vetted the same way
    (signature, output kind, smoke test): insights score customers' risk with it."""
    if deployment.output.kind is not OutputKind.PROBABILITY:
        raise dg.Failure(
            "real-time insights rank customers by the probability a model gives them; "
            f"deployment {deployment.name} declares output kind "
            f"{deployment.output.kind.value!r} (set batch-inference.realtime.deployment)"
        )
    tables = lake.layout.deployment(deployment)
    validated = snapshot(tables.validated, deployment.partitioning)
    keys = validated.partitions()
    sample = first_rows(validated.batches(keys[-1]), SMOKE_ROWS) if keys else None
    if sample is None:
        raise dg.Failure(f"no validated rows at {tables.validated.uri} to vet the model on")
    contract = contract_of(deployment, table_schema(tables.features), registry)
    probe = ServingProbe(
        load=lambda version: registry.scorer(version, lambda: [sample], deployment.output),
        sample=sample,
        validated=contract.validated_schema(),  # the contract's nullability (Delta keeps none)
        max_load_seconds=registry.max_load_seconds,
    )
    try:
        resolution = resolve_serving_version(
            registry.registry, deployment.model_name, deployment.alias, validated.schema, probe
        )
    except (ModelNotFoundError, NoCompatibleVersionError) as error:
        raise dg.Failure(str(error)) from error
    return probe.scorers[resolution.serving.version]
