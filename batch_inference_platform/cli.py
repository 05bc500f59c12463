"""Commands a person types: ``batch-inference demo`` runs the whole graph on embedded defaults."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from batch_inference_platform.config import Settings, SettingsError, load_settings
from batch_inference_platform.lib.instance_yaml import local_instance_yaml

if TYPE_CHECKING:
    import dagster as dg

    from batch_inference_platform.defs.scope import DeploymentScope

warnings.filterwarnings("ignore", message=".*is currently in (beta|preview).*")
QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass
class PartitionSummary:
    """One demo partition's outcome, as the summary table shows it."""

    deployment: str
    partition: str
    rows_in: int = 0
    rows_quarantined: int = 0
    rows_scored: int = 0
    rows_per_second: float = 0.0
    model_version: str = "-"
    checks_passed: int = 0
    checks_failed: int = 0
    table: str = "-"
    ok: bool = False


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="batch-inference", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="generate data, train, score and catalog N days")
    demo.add_argument("--days", type=int, default=3, help="number of daily partitions (3)")
    demo.add_argument("--rows", type=int, default=200_000, help="rows per day (200000)")
    demo.add_argument(
        "--end-date",
        type=dt.date.fromisoformat,
        default=None,
        help="last partition, YYYY-MM-DD (default: the latest complete day)",
    )
    demo.add_argument(
        "--boost-rounds",
        type=int,
        default=200,
        help="LightGBM boosting rounds of the demo model (200)",
    )
    commands.add_parser(
        "api", help="serve the client API and the webhook receivers (port from application.yml)"
    )
    hash_key = commands.add_parser(
        "hash-key", help="print the SHA-256 of a tenant's API key, for the tenants file"
    )
    hash_key.add_argument("key", help="the API key (give it to the tenant, store only the hash)")
    traffic = commands.add_parser(
        "produce-events",
        help="publish demo journey/transaction/decision events to the real-time topics",
    )
    traffic.add_argument("--customers", type=int, default=1000)
    traffic.add_argument("--hours", type=float, default=3.0, help="time span of the events")
    traffic.add_argument("--seed", type=int, default=7)
    commands.add_parser(
        "dagster-yaml",
        help="print the production dagster.yaml (PostgreSQL storage, run queue, tenant limits)",
    )
    hook = commands.add_parser(
        "register-webhook",
        help="register the receiver as a webhook on the MLflow server (secret from "
        "MLFLOW_WEBHOOK_SECRET)",
    )
    hook.add_argument(
        "--url",
        required=True,
        help="the receiver's public URL, e.g. https://bip.example.com/api/v1/webhooks/mlflow",
    )
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return 2
    if args.command in ("api", "dagster-yaml"):
        from batch_inference_platform.lib.tenants import TenantsError

        try:
            return serve_api(settings) if args.command == "api" else print_instance_yaml(settings)
        except TenantsError as error:
            print(f"configuration error: {error}", file=sys.stderr)
            return 2
    if args.command == "hash-key":
        from batch_inference_platform.lib.tenants import hash_api_key

        print(hash_api_key(args.key))
        return 0
    if args.command == "produce-events":
        return produce_events(settings, customers=args.customers, hours=args.hours, seed=args.seed)
    if args.command == "register-webhook":
        secret = os.environ.get("MLFLOW_WEBHOOK_SECRET")
        if not secret:
            print("MLFLOW_WEBHOOK_SECRET is not set", file=sys.stderr)
            return 2
        from batch_inference_platform.lib.registry.webhooks import (
            WebhookRegistrationError,
            register_webhook,
        )

        try:
            hook_id = register_webhook(
                settings.application.mlflow.tracking_uri, url=args.url, secret=secret
            )
        except WebhookRegistrationError as error:
            print(f"register-webhook: {error}", file=sys.stderr)
            return 2
        print(f"webhook {hook_id} -> {args.url}")
        return 0
    if args.days < 1 or args.rows < 1:
        parser.error("--days and --rows must be positive")
    return run_demo(
        settings,
        days=args.days,
        rows=args.rows,
        end_date=args.end_date,
        boost_rounds=args.boost_rounds,
    )


def serve_api(settings: Settings) -> int:
    """Run the HTTP service under uvicorn until interrupted."""
    from batch_inference_platform.api.app import create_app, serve
    from batch_inference_platform.api.jobs import JobsService
    from batch_inference_platform.lib.deployments.folder import read_deployments
    from batch_inference_platform.lib.inbox.job_store import JobStore
    from batch_inference_platform.lib.inbox.relay import OutboxRelay
    from batch_inference_platform.lib.messaging.kafka import KafkaPublisher
    from batch_inference_platform.lib.realtime.cache import RecommendationCache, connect
    from batch_inference_platform.lib.tenants import load_tenants

    app = settings.application
    api, kafka = app.api, app.kafka.as_config()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    store = JobStore(api.jobs_url, kafka.topics)
    service = JobsService(
        store=store,
        tenants=load_tenants(Path(api.tenants_file), app.lake.root, app.environment),
        max_days=api.max_days_per_request,
        deployments=read_deployments(
            settings.project_root, app.deployments_dir, lake_root=app.lake.root
        ),
        days_ahead=api.partition_days_ahead,
    )
    relay = OutboxRelay(store, lambda: KafkaPublisher(kafka)) if kafka.bootstrap_servers else None
    if relay is None:
        print(
            "batch-inference.kafka.bootstrap-servers is not set: accepted jobs wait in the outbox",
            file=sys.stderr,
        )
    realtime = app.realtime
    cache = RecommendationCache(
        connect(realtime.redis_url, os.environ.get("REDIS_PASSWORD")),
        realtime.redis_prefix,
        realtime.cache_ttl,
    )
    service_app = create_app(
        api.inbox_url,
        jobs=service,
        relay=relay,
        recommendations=cache,
        environment=app.environment,
        max_body_bytes=api.max_body_bytes,
    )
    serve(service_app, api.host, api.port)  # no server banner
    return 0


def produce_events(settings: Settings, *, customers: int, hours: float, seed: int) -> int:
    """Publish demo traffic ending now, keyed by customer id."""
    from batch_inference_platform.lib.messaging.kafka import KafkaPublisher, ensure_topics
    from batch_inference_platform.lib.realtime.traffic import demo_events

    app = settings.application
    topics = app.realtime.topics
    by_kind = {
        "journey": topics.journey_events,
        "transaction": topics.transactions,
        "decision": topics.credit_decisions,
    }
    kafka = app.kafka.as_config()
    ensure_topics(kafka, [*by_kind.values(), topics.insights, topics.dead_letter])
    start = dt.datetime.now(dt.UTC) - dt.timedelta(hours=hours)
    messages = [
        (by_kind[kind], str(event.customer_id), event.model_dump_json().encode())
        for kind, event in demo_events(customers=customers, start=start, hours=hours, seed=seed)
    ]
    with KafkaPublisher(kafka, timeout_seconds=60) as publisher:
        for first in range(0, len(messages), 10_000):
            publisher.publish(messages[first : first + 10_000])
    print(f"{len(messages)} events published to {', '.join(by_kind.values())}")
    return 0


def print_instance_yaml(settings: Settings) -> int:
    """The production dagster.yaml on stdout."""
    from batch_inference_platform.lib.instance_yaml import instance_yaml
    from batch_inference_platform.lib.tenants import load_tenants

    app = settings.application
    tenants = load_tenants(Path(app.api.tenants_file), app.lake.root, app.environment)
    print(
        instance_yaml(max_concurrent_runs=app.scheduling.max_concurrent_jobs, tenants=tenants),
        end="",
    )
    return 0


_OLD_INSTANCE_YAML = "telemetry:\n  enabled: false\n"
_GENERATED = "# The platform's local Dagster instance"


def prepare_dagster_home(settings: Settings) -> None:
    """Point Dagster at the project's persistent instance (created on first use)."""
    os.environ["DAGSTER_HOME"] = str(settings.dagster_home)
    settings.dagster_home.mkdir(parents=True, exist_ok=True)
    instance_yaml = settings.dagster_home / "dagster.yaml"
    # Ours (missing, the earlier two-line default, or generated) is kept current - with run
    # monitoring, so a killed run is marked failed; a file a person wrote is left alone.
    current = instance_yaml.read_text() if instance_yaml.exists() else None
    if current is None or current == _OLD_INSTANCE_YAML or current.startswith(_GENERATED):
        instance_yaml.write_text(local_instance_yaml())


def run_demo(
    settings: Settings, *, days: int, rows: int, end_date: dt.date | None, boost_rounds: int
) -> int:
    """For every deployment with a demo generator: generate ``days`` partitions, train and
    register its demo model, then score and catalog each partition - on a persistent Dagster
    instance, so ``make dev`` shows the runs."""
    prepare_dagster_home(settings)

    import dagster as dg

    from batch_inference_platform.defs.scope import DeploymentScope
    from batch_inference_platform.lib.deployments.folder import read_deployments

    instance = dg.DagsterInstance.get()
    defs = WorkspaceJobs(instance, settings.project_root)
    started = time.perf_counter()
    summaries: list[PartitionSummary] = []
    app = settings.application
    found = read_deployments(settings.project_root, app.deployments_dir, lake_root=app.lake.root)
    plans: list[tuple[DeploymentScope, list[str | None]]] = []
    for deployment in (d for d in found.values() if d.generator):
        scope = DeploymentScope(deployment)
        chosen = _demo_partitions(scope, days, end_date)
        if not chosen:
            print(f"--end-date {end_date} is not a partition of {deployment.name}", file=sys.stderr)
            return 2
        plans.append((scope, chosen))
    for scope, chosen in plans:
        name = scope.name
        print(f"{name}: {len(chosen)} partition(s) x {rows} rows")
        for key in chosen:
            _run(
                defs,
                scope.job_name("generate_features_job"),
                key,
                {"ops": {_op(scope.features): {"config": {"rows": rows}}}},
            )
        training = {"num_boost_round": boost_rounds, "training_partition": chosen[0]}
        trained = time.perf_counter()
        _run(
            defs,
            scope.job_name("train_demo_model_job"),
            None,
            {"ops": {_op(scope.demo_model): {"config": training}}},
        )
        print(f"{name}: demo model ready in {time.perf_counter() - trained:.1f}s")
        for key in chosen:
            result = _run(defs, scope.job_name("score_partition_job"), key, {})
            summaries.append(_summarize(scope, key or "all", result))
    _print_summary(summaries, time.perf_counter() - started, settings)
    return 0 if summaries and all(s.ok for s in summaries) else 1


def _demo_partitions(
    scope: DeploymentScope, days: int, end_date: dt.date | None
) -> list[str | None]:
    """The last ``days`` partition keys of a deployment up to ``end_date`` (its last hour for
    an hourly deployment; default: the latest complete partition); ``[None]`` when it is
    unpartitioned, ``[]`` when ``end_date`` is none of its partitions."""
    partitions = scope.partitions_def
    if partitions is None:
        return [None]
    keys = partitions.get_partition_keys()
    if end_date is not None:
        day = end_date.isoformat()
        keys = [key for key in keys if key[:10] <= day]
        if not keys or keys[-1][:10] != day:
            return []
    return list(keys[-days:])


def _op(key: dg.AssetKey) -> str:
    """The op name Dagster gives an asset (its key joined by ``__``), for run config."""
    return "__".join(key.path)


LOCATION = "batch_inference_platform"
"""The code location's name in ``workspace.yaml`` (what ``make dev`` serves)."""
MODULE = "batch_inference_platform.definitions"


class WorkspaceJobs:
    """The workspace's code location (``workspace.yaml``: ``LOCATION``, module ``MODULE``),
    loaded in this process, whose jobs run here as ``dagster job launch`` records a run: with
    the location's origin and job snapshot. So ``make dev`` shows the demo's runs on the job's
    page and timeline, and re-executes them as runs of the job it serves - no server needed.

    Each run executes in this process (``execute_run``) with the job's executor: the
    deployment jobs' in-process executor, so model and compile caches carry across runs."""

    def __init__(self, instance: dg.DagsterInstance, project_root: Path) -> None:
        from dagster._core.remote_origin import InProcessCodeLocationOrigin
        from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

        self.instance = instance
        origin = InProcessCodeLocationOrigin(
            LoadableTargetOrigin(
                executable_path=sys.executable,
                module_name=MODULE,
                working_directory=str(project_root),
            ),
            location_name=LOCATION,
        )
        self.location = origin.create_location(instance)
        (self.repository,) = self.location.get_repositories().values()

    def run(
        self,
        job: str,
        partition: str | None,
        run_config: dict,
        *,
        raise_on_error: bool = True,
    ) -> dg.ExecutionResult:
        """Create ``job``'s run (for ``partition``) as the location's and execute it here."""
        import dagster as dg
        from dagster._core.definitions.selector import JobSubsetSelector
        from dagster._core.execution.api import execute_run
        from dagster._core.origin import JobPythonOrigin
        from dagster._utils.hosted_user_process import recon_job_from_origin

        selector = JobSubsetSelector(
            location_name=self.location.name,
            repository_name=self.repository.name,
            job_name=job,
            op_selection=None,
        )
        remote_job = self.location.get_job(selector)
        plan = self.location.get_execution_plan(
            remote_job,
            run_config,
            step_keys_to_execute=None,
            known_state=None,
            instance=self.instance,
        ).execution_plan_snapshot
        tags = {**remote_job.tags, **({"dagster/partition": partition} if partition else {})}
        origin: JobPythonOrigin = remote_job.get_python_origin()
        created = self.instance.create_run(
            job_name=job,
            run_id=None,
            run_config=run_config,
            resolved_op_selection=None,
            step_keys_to_execute=plan.step_keys_to_execute,
            op_selection=None,
            status=dg.DagsterRunStatus.NOT_STARTED,
            root_run_id=None,
            parent_run_id=None,
            tags=tags,
            job_snapshot=remote_job.job_snapshot,
            execution_plan_snapshot=plan,
            parent_job_snapshot=remote_job.parent_job_snapshot,
            remote_job_origin=remote_job.get_remote_origin(),
            job_code_origin=origin,
            asset_selection=None,
            asset_check_selection=None,
            asset_graph=self.repository.asset_graph,
        )
        return execute_run(
            recon_job_from_origin(origin), created, self.instance, raise_on_error=raise_on_error
        )


def _run(defs: WorkspaceJobs, job: str, partition: str | None, run_config: dict):
    return defs.run(
        job,
        partition,
        {**run_config, **QUIET_LOGS},
        # A scoring run may fail a blocking check; the summary reports it instead of a trace.
        raise_on_error=not job.endswith("score_partition_job"),
    )


def _summarize(scope: DeploymentScope, partition: str, result) -> PartitionSummary:
    from batch_inference_platform.defs.metadata import PredictionsMetadata

    summary = PartitionSummary(deployment=scope.name, partition=partition, ok=result.success)
    for event in result.get_asset_materialization_events():
        materialization = event.step_materialization_data.materialization
        values = {k: v.value for k, v in materialization.metadata.items()}
        if materialization.asset_key == scope.validated:
            summary.rows_in = int(values.get("rows_in", 0))
            summary.rows_quarantined = int(values.get("rows_quarantined", 0))
        elif (record := PredictionsMetadata.from_materialization(materialization)) is not None:
            summary.rows_scored = record.rows
            summary.rows_per_second = record.rows_per_second or 0.0
            summary.model_version = str(record.model_version)
            summary.table = record.table_uri or "-"
    for evaluation in result.get_asset_check_evaluations():
        if evaluation.passed:
            summary.checks_passed += 1
        else:
            summary.checks_failed += 1
    return summary


def _print_summary(rows: list[PartitionSummary], seconds: float, settings: Settings) -> None:
    header = (
        "deployment",
        "partition",
        "rows in",
        "quarantined",
        "scored",
        "rows/s",
        "model v",
        "checks ok/failed",
        "status",
    )
    table = [header] + [
        (
            s.deployment,
            s.partition,
            f"{s.rows_in:,}",
            f"{s.rows_quarantined:,}",
            f"{s.rows_scored:,}",
            f"{s.rows_per_second:,.0f}",
            s.model_version,
            f"{s.checks_passed}/{s.checks_failed}",
            "ok" if s.ok else "FAILED",
        )
        for s in rows
    ]
    widths = [max(len(str(r[i])) for r in table) for i in range(len(header))]
    print()
    for i, row in enumerate(table):
        print(
            "  ".join(
                str(c).rjust(w) if j else str(c).ljust(w)
                for j, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
        if i == 0:
            print("  ".join("-" * w for w in widths))
    scored = sum(s.rows_scored for s in rows)
    print(f"\n{scored:,} rows scored in {seconds:.1f}s end to end")
    tables = sorted({s.table for s in rows if s.table != "-"})
    print(f"predictions: {', '.join(tables) or '-'}")
    print(f"lake root:   {settings.application.lake.root}")
    print(f"catalog:     {settings.application.lake.root.rstrip('/')}/catalog/datasets")
    print(f"mlflow:      {settings.application.mlflow.tracking_uri}")
    print(f"dagster:     DAGSTER_HOME={settings.dagster_home} (make dev to browse the runs)")


if __name__ == "__main__":
    sys.exit(main())
