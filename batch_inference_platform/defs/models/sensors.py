"""Model promotions drive scoring: when a deployment's serving alias moves, re-score its recent
partitions (one sensor per deployment).

A promotion is one move of the alias with an identity of its own (``lib.registry.promotions``):
model, alias, version and when it moved. Runs are keyed by that identity and the partitions,
so a re-sent delivery or a repeated tick starts nothing, while every new move - a rollback to
an earlier version included - re-scores the recent days that do not carry the alias holder.
Each run is pinned to the version it was requested for (``REQUESTED_VERSION_TAG``, read by
``model_versions``).

Latency: the sensor is evaluated on every pass of the daemon (every 5 s; ``TICK_SECONDS`` asks
for no less). A pass that finds no new delivery about the model costs one indexed read of the
inbox and nothing else; the registry is asked when a delivery mentions the model, while a run
it waits for is in flight, and every ``POLL_SECONDS`` as the backstop for a missed webhook or
a registry without webhooks (MLflow or Databricks: polling goes through the MLflow client).

Before it calls a day current the sensor counts the runs in flight that write the deployment's
predictions (queued or running, by their job, asset selection and partition tags): a day being
re-scored for the alias holder is left to that run; a day that a run for another version (or
one resolving the alias itself) is about to write waits for that run to end, then is judged
again - so two writers never race for a day.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import dagster as dg
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    PARTITION_NAME_TAG,
)

from batch_inference_platform.defs.resources import (
    InboxResource,
    LakeResource,
    ModelRegistryResource,
)
from batch_inference_platform.defs.scope import DeploymentScope
from batch_inference_platform.lib.deployments.partitioning import WHOLE_TABLE, Partitioning
from batch_inference_platform.lib.inbox.store import InboxEvent
from batch_inference_platform.lib.lake.lineage import latest_commits
from batch_inference_platform.lib.lake.tables import DeltaLocation, snapshot
from batch_inference_platform.lib.registry.client import ModelNotFoundError
from batch_inference_platform.lib.registry.promotions import Promotion, reported_move

if TYPE_CHECKING:
    from batch_inference_platform.defs.inference.schedules import AssetJob

REQUESTED_VERSION_TAG = "bip/requested_model_version"
"""The model version a re-scoring run must score (``model_versions`` holds it to that)."""
PROMOTION_TAG = "bip/promotion"
"""The promotion a run was requested for (``model@alias=vN@<when it moved>``)."""
PROMOTION_SOURCE_TAG = "bip/promotion_source"
TICK_SECONDS = 1
"""The sensor's minimum interval; Dagster's daemon evaluates sensors every 5 s at most."""
POLL_SECONDS = 30
"""How often the registry is asked without a delivery (the backstop for missed webhooks)."""
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def build_model_update_sensor(
    scope: DeploymentScope, job: AssetJob, rescore_partitions: int
) -> dg.SensorDefinition:
    """The deployment's sensor, re-scoring its ``rescore_partitions`` most recent partitions."""
    deployment = scope.deployment
    model_name, alias = deployment.model_name, deployment.alias
    partitioning = deployment.partitioning

    @dg.sensor(
        name=scope.job_name("mlflow_model_update_sensor"),
        job=job,
        minimum_interval_seconds=TICK_SECONDS,
        description=f"{deployment.name}: re-scores the most recent partitions when "
        f"{model_name}@{alias} moves (MLflow/Databricks webhooks via the inbox within seconds, "
        f"registry polling every {POLL_SECONDS} s as backstop); runs are keyed by the "
        "promotion and pinned to its version.",
    )
    def mlflow_model_update_sensor(
        context: dg.SensorEvaluationContext,
        inbox: InboxResource,
        registry: ModelRegistryResource,
        lake: LakeResource,
    ) -> dg.SensorResult:
        cursor = _Cursor.parse(context.cursor)
        events = inbox.store.read_after(cursor.inbox)
        if events:
            cursor.inbox = events[-1].id
        mentioned = [e for e in events if _mentions(e, model_name)]
        now = time.time()
        since_poll = now - cursor.polled_at
        if not mentioned and not cursor.waiting and since_poll < POLL_SECONDS:
            return dg.SensorResult(
                cursor=cursor.dump(),
                skip_reason=f"no delivery about {model_name}; registry asked "
                f"{since_poll:.0f} s ago (every {POLL_SECONDS} s)",
            )
        cursor.polled_at = now
        try:
            holder = registry.registry.by_alias(model_name, alias).version
        except ModelNotFoundError as error:
            context.log.warning(str(error))
            return dg.SensorResult(cursor=cursor.dump(), skip_reason=str(error))
        promotion = cursor.promotion
        if promotion is None or promotion.version != holder:
            promotion = reported_move(mentioned, model_name, alias, holder) or Promotion(
                model_name, alias, holder, dt.datetime.fromtimestamp(now, dt.UTC)
            )
            cursor.promotion = promotion
            context.log.info(f"promotion {promotion.key} ({promotion.source})")
        recent = _recent(
            lake.layout.deployment(deployment).predictions, partitioning, rescore_partitions
        )
        stale = _scored_by_other_versions(
            lake.layout.deployment(deployment).predictions, recent, holder
        )
        in_flight = _in_flight(context.instance, scope, job.name, partitioning)
        busy = {key: versions for key, versions in in_flight.items() if key in recent}
        # A day a run is re-scoring for the holder is (about to be) current; a day another
        # writer is on waits for it to end.
        waiting = sorted(k for k, versions in busy.items() if versions != {holder})
        wanted = [k for k in stale if k not in busy]
        cursor.waiting = bool(busy)  # a holder's run may end superseded: judge again soon
        if waiting:
            context.log.info(
                f"{model_name}@{alias} is v{holder}; waiting for runs in flight on "
                f"{', '.join(waiting)} (for {_versions(busy, waiting)}) before judging them"
            )
        if not wanted:
            return dg.SensorResult(
                cursor=cursor.dump(),
                skip_reason=(
                    f"waiting for runs in flight on {', '.join(waiting)}"
                    if waiting
                    else f"the {rescore_partitions} most recent scored partitions already carry "
                    f"(or are being re-scored with) {model_name} v{holder}"
                ),
            )
        requests = [
            _rescore_request(deployment.name, promotion, keys)
            for keys in _contiguous(partitioning, wanted)
        ]
        context.log.info(f"{promotion.key}: re-scoring {', '.join(wanted)}")
        return dg.SensorResult(run_requests=requests, cursor=cursor.dump())

    return mlflow_model_update_sensor


class _Cursor:
    """What the sensor remembers between ticks: the inbox position, the current promotion,
    when it last asked the registry and whether it waits for runs in flight."""

    def __init__(self, value: dict[str, Any]) -> None:
        self.inbox = int(value.get("inbox", 0))
        promotion = value.get("promotion")
        self.promotion = Promotion.from_json(promotion) if promotion else None
        self.polled_at = float(value.get("polled_at", 0.0))
        self.waiting = bool(value.get("waiting", False))

    @staticmethod
    def parse(text: str | None) -> _Cursor:
        return _Cursor(json.loads(text) if text else {})

    @property
    def version(self) -> int | None:
        return self.promotion.version if self.promotion else None

    def dump(self) -> str:
        return json.dumps(
            {
                "inbox": self.inbox,
                "version": self.version,
                "promotion": self.promotion.to_json() if self.promotion else None,
                "polled_at": self.polled_at,
                "waiting": self.waiting,
            }
        )


def _recent(predictions: DeltaLocation, partitioning: Partitioning, recent: int) -> list[str]:
    """The ``recent`` most recent scored partitions (never-scored ones have nothing to
    re-score)."""
    if not predictions.exists():
        return []
    return snapshot(predictions, partitioning).partitions()[-recent:]


def _scored_by_other_versions(
    predictions: DeltaLocation, keys: list[str], version: int
) -> list[str]:
    """Those of ``keys`` whose latest predictions were not written by ``version``."""
    commits = latest_commits(predictions, keys)  # one read of the history
    return [
        key
        for key in keys
        if key not in commits or commits[key].info.get("model_version") != str(version)
    ]


def _in_flight(
    instance: dg.DagsterInstance,
    scope: DeploymentScope,
    rescore_job: str,
    partitioning: Partitioning,
) -> dict[str, set[int | None]]:
    """Partitions that queued or running runs will write predictions for, each with the
    versions those runs were requested for (None: the run resolves the alias itself)."""
    jobs = {rescore_job, scope.job_name("score_partition_job")}
    found: dict[str, set[int | None]] = {}
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=IN_FLIGHT)):
        selection = run.asset_selection or set()
        if run.job_name not in jobs and scope.predictions not in selection:
            continue
        requested = run.tags.get(REQUESTED_VERSION_TAG)
        version = int(requested) if requested and requested.isdigit() else None
        for key in _run_partitions(run.tags, scope, partitioning):
            found.setdefault(key, set()).add(version)
    return found


def _run_partitions(
    tags: Mapping[str, str], scope: DeploymentScope, partitioning: Partitioning
) -> Iterable[str]:
    if not partitioning.partitioned:
        return [WHOLE_TABLE]
    if PARTITION_NAME_TAG in tags:
        return [tags[PARTITION_NAME_TAG]]
    first, last = tags.get(ASSET_PARTITION_RANGE_START_TAG), tags.get(ASSET_PARTITION_RANGE_END_TAG)
    partitions = scope.partitions_def
    if first and last and partitions is not None:
        return partitions.get_partition_keys_in_range(dg.PartitionKeyRange(first, last))
    return []


def _versions(busy: dict[str, set[int | None]], keys: list[str]) -> str:
    versions = set().union(*(busy[key] for key in keys))
    return ", ".join(
        sorted("the alias holder at run time" if v is None else f"v{v}" for v in versions)
    )


def _contiguous(partitioning: Partitioning, keys: list[str]) -> list[list[str]]:
    """Sorted partition keys split into runs of consecutive partitions."""
    groups: list[list[str]] = []
    for key in keys:
        if groups and partitioning.next_key(groups[-1][-1]) == key:
            groups[-1].append(key)
        else:
            groups.append([key])
    return groups


def _rescore_request(deployment: str, promotion: Promotion, keys: list[str]) -> dg.RunRequest:
    """One run re-scoring consecutive partitions with the promotion's version (resolved and
    loaded once); the run key names the deployment, the promotion and the partitions, so a
    repeated delivery or tick starts nothing new and every new move gets its own runs."""
    first, last = keys[0], keys[-1]
    version = str(promotion.version)
    tags = {
        "deployment": deployment,
        "model": promotion.model,
        "model_version": version,
        REQUESTED_VERSION_TAG: version,
        PROMOTION_TAG: promotion.key,
        PROMOTION_SOURCE_TAG: promotion.source,
    }
    prefix = f"{deployment}:{promotion.key}"
    if first == WHOLE_TABLE:
        return dg.RunRequest(run_key=f"{prefix}:{first}", tags=tags)
    if first == last:
        return dg.RunRequest(run_key=f"{prefix}:{first}", partition_key=first, tags=tags)
    return dg.RunRequest(
        run_key=f"{prefix}:{first}..{last}",
        tags={
            **tags,
            ASSET_PARTITION_RANGE_START_TAG: first,
            ASSET_PARTITION_RANGE_END_TAG: last,
        },
    )


def _mentions(event: InboxEvent, model_name: str) -> bool:
    """Whether a delivery concerns ``model_name`` (MLflow nests it in data, Databricks not)."""
    data = event.payload.get("data", event.payload)
    return isinstance(data, dict) and model_name in (data.get("name"), data.get("model_name"))
