"""``client_request_sensor`` ticks against a real broker and job store: accepted requests
become runs (urgent first, tagged with tenant and deployment), anything else on the topic is
skipped with a reason, and the offsets in the cursor make a re-read start nothing twice. A
request the API completed from its deployment (model, table) runs with those; the run selects
the deployment's partitions by day, and re-checks the deployment before scoring."""

from __future__ import annotations

import datetime as dt
import json
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from batch_inference_platform.api.app import create_app
from batch_inference_platform.api.jobs import JobsService
from batch_inference_platform.defs.inference.client_jobs import (
    client_inference_job,
    selected_keys,
)
from batch_inference_platform.defs.inference.request_sensor import client_request_sensor
from batch_inference_platform.defs.resources import (
    ClientRequestsResource,
    LakeResource,
    LocalEngineResource,
    ModelRegistryResource,
)
from batch_inference_platform.lib.deployments.partitioning import Partitioning, PartitionKind
from batch_inference_platform.lib.inbox.job_store import JobStore
from batch_inference_platform.lib.inbox.relay import OutboxRelay
from batch_inference_platform.lib.messaging.kafka import KafkaPublisher, ensure_topics
from batch_inference_platform.lib.messaging.schemas import encode
from batch_inference_platform.lib.messaging.settings import KafkaConfig
from batch_inference_platform.lib.messaging.topics import Topics
from batch_inference_platform.lib.tenants import load_tenants

from .conftest import failure_messages
from .kafka_broker import KafkaBroker
from .servers import served
from .test_client_api import GLOBEX_KEY, write_tenants
from .test_messaging import kafka_settings, request


@dataclass
class Setup:
    resource: ClientRequestsResource
    store: JobStore
    topics: Topics
    publisher: KafkaPublisher
    kafka: KafkaConfig
    root: Path


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    with KafkaBroker(tmp_path / "kafka") as broker:
        settings = kafka_settings(broker.bootstrap)
        kafka = settings.as_config()
        topics = kafka.topics
        ensure_topics(kafka, topics.all())
        resource = ClientRequestsResource(
            jobs_url=f"sqlite:///{tmp_path / 'jobs.db'}",
            tenants_file=str(write_tenants(tmp_path / "tenants.yml")),
            lake_root=str(tmp_path / "lake"),
            kafka_settings=settings.model_dump(),
        )
        with KafkaPublisher(kafka) as publisher:
            yield Setup(resource, resource.store, topics, publisher, kafka, tmp_path)


def _tick(setup: Setup, instance: dg.DagsterInstance, cursor: str | None = None):
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"client_requests": setup.resource}
    )
    result = client_request_sensor(context)
    assert isinstance(result, dg.SensorResult)
    return result


def test_accepted_requests_run_urgent_first_and_nothing_twice(setup: Setup) -> None:
    normal = request("job-normal", priority="normal")
    urgent = request("job-urgent", tenant="globex", priority="urgent")
    cancelled = request("job-cancelled")
    failed = request("job-failed")  # e.g. its outbox message was parked
    for message in (normal, urgent, cancelled, failed):
        setup.store.submit(message, None)
    setup.store.cancel("acme", "job-cancelled")
    setup.store.update_status("job-failed", "failed")
    unknown = request("job-never-submitted")
    setup.publisher.publish(
        [
            (setup.topics.input, m.job_id, encode(m))
            for m in (normal, cancelled, failed, unknown, urgent)
        ]
        + [(setup.topics.input, "junk", b"{not json")]
    )
    with dg.instance_for_test() as instance:
        first = _tick(setup, instance)
        requests = first.run_requests or []
        assert [r.run_key for r in requests] == ["job-urgent", "job-normal"]
        assert requests[0].tags == {
            "tenant": "globex",
            "job_id": "job-urgent",
            "deployment": "credit_risk",
            "dagster/priority": "10",
        }
        config = requests[1].run_config["ops"]["score_client_request"]["config"]
        assert (
            config["deployment"],
            config["model"],
            config["start_date"],
            config["end_date"],
        ) == ("credit_risk", "credit_risk_default@champion", "2026-11-02", "2026-11-03")
        assert setup.store.get("acme", "job-normal").status == "queued"  # type: ignore[union-attr]
        assert sum(json.loads(first.cursor or "{}")["offsets"].values()) == 6

        # The next tick reads on from the cursor: nothing new, nothing twice.
        assert not _tick(setup, instance, first.cursor).run_requests
        # Re-reading from the start (a lost cursor) gives the same run keys: Dagster dedupes.
        again = _tick(setup, instance)
        assert [r.run_key for r in again.run_requests or []] == ["job-urgent", "job-normal"]


def test_a_request_naming_only_its_deployment_runs_with_its_model_and_validated_table(
    setup: Setup,
) -> None:
    """API -> job store -> outbox relay -> topic -> sensor: churn named alone becomes a run of
    churn's serving model over validated/churn, tagged with the deployment."""
    tenants = load_tenants(Path(setup.resource.tenants_file), setup.resource.lake_root)
    app = create_app(
        f"sqlite:///{setup.root / 'inbox.db'}",
        jobs=JobsService(setup.store, tenants, max_days=31),
    )
    with served(app) as url:
        submit = urllib.request.Request(
            url + "/api/v1/batch/inference",
            data=json.dumps({"deployment": "churn", "partition": "2026-11-02"}).encode(),
            headers={"Authorization": f"Bearer {GLOBEX_KEY}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(submit, timeout=30) as answer:
            assert answer.status == 202
            job_id = json.loads(answer.read())["job_id"]
    with OutboxRelay(setup.store, lambda: KafkaPublisher(setup.kafka)) as relay:
        assert relay.publish_pending() >= 1
    with dg.instance_for_test() as instance:
        (run,) = _tick(setup, instance).run_requests or []
    assert run.run_key == job_id
    assert run.tags["deployment"] == "churn" and run.tags["tenant"] == "globex"
    assert run.run_config["ops"]["score_client_request"]["config"] == {
        "job_id": job_id,
        "tenant": "globex",
        "deployment": "churn",
        "model": "churn_risk@champion",
        "feature_table": "validated/churn",
        "start_date": "2026-11-02",
        "end_date": "2026-11-02",
        "output_table": "predictions/churn",
    }


def test_the_days_select_the_deployments_partitions() -> None:
    """Daily: those days; hourly: every hour of those days; unpartitioned: the whole table."""
    start = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    daily = Partitioning(PartitionKind.DAILY, "event_date", start)
    days = ["2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04"]
    first, last = dt.date(2026, 11, 2), dt.date(2026, 11, 3)
    assert selected_keys(daily, days, first, last) == ["2026-11-02", "2026-11-03"]
    hourly = Partitioning(PartitionKind.HOURLY, "event_hour", start)
    hours = [f"2026-11-0{d}-{h:02d}:00" for d in (1, 2, 3) for h in (0, 13, 23)]
    assert selected_keys(hourly, hours, first, first) == [
        "2026-11-02-00:00",
        "2026-11-02-13:00",
        "2026-11-02-23:00",
    ]
    assert selected_keys(Partitioning(PartitionKind.NONE), ["all"], None, None) == ["all"]


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"tenant": "acme", "deployment": "churn"}, "tenant 'acme' may not use deployment 'churn'"),
        ({"deployment": "fraud"}, "unknown deployment 'fraud' (declared: churn, credit_risk)"),
        (
            {"model": "churn_risk@champion"},
            "model 'churn_risk' is not the model of deployment 'credit_risk'",
        ),
    ],
)
def test_the_run_checks_the_deployment_again(
    setup: Setup, changes: dict[str, str], words: str
) -> None:
    """The tenants file or the deployments may have changed since the API accepted the job:
    the run fails naming why, before it reads a table or the registry."""
    config = {
        "job_id": "job-1",
        "tenant": "globex",
        "deployment": "credit_risk",
        "model": "credit_risk_default@champion",
        "feature_table": "validated/credit_risk",
        "start_date": "2026-11-02",
        "end_date": "2026-11-02",
        "output_table": "predictions/credit_risk",
        **changes,
    }
    nowhere = str(setup.root / "nowhere")
    result = client_inference_job.execute_in_process(
        run_config={"ops": {"score_client_request": {"config": config}}},
        resources={
            "client_requests": setup.resource,
            "lake": LakeResource(root=str(setup.root / "lake")),
            "registry": ModelRegistryResource(
                tracking_uri=f"sqlite:///{nowhere}/mlflow.db",
                artifact_root=nowhere,
                experiment="x",
                model_cache_dir=nowhere,
            ),
            "engine": LocalEngineResource(),
        },
        raise_on_error=False,
    )
    assert not result.success
    assert words in failure_messages(result)
