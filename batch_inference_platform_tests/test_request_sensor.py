"""``client_request_sensor`` ticks against a real broker and job store: accepted requests
become runs (urgent first, tagged), anything else on the topic is skipped with a reason, and
the offsets in the cursor make a re-read start nothing twice."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from batch_inference_platform.defs.inference.request_sensor import client_request_sensor
from batch_inference_platform.defs.resources import ClientRequestsResource
from batch_inference_platform.lib.inbox.job_store import JobStore
from batch_inference_platform.lib.messaging.kafka import KafkaPublisher, ensure_topics
from batch_inference_platform.lib.messaging.schemas import encode
from batch_inference_platform.lib.messaging.topics import Topics

from .kafka_broker import KafkaBroker
from .test_client_api import write_tenants
from .test_messaging import kafka_settings, request


@dataclass
class Setup:
    resource: ClientRequestsResource
    store: JobStore
    topics: Topics
    publisher: KafkaPublisher


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
            yield Setup(resource, resource.store, topics, publisher)


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
            "dagster/priority": "10",
        }
        config = requests[1].run_config["ops"]["score_client_request"]["config"]
        assert (config["model"], config["start_date"], config["end_date"]) == (
            "credit_risk_default@champion",
            "2026-11-02",
            "2026-11-03",
        )
        assert setup.store.get("acme", "job-normal").status == "queued"  # type: ignore[union-attr]
        assert sum(json.loads(first.cursor or "{}")["offsets"].values()) == 6

        # The next tick reads on from the cursor: nothing new, nothing twice.
        assert not _tick(setup, instance, first.cursor).run_requests
        # Re-reading from the start (a lost cursor) gives the same run keys: Dagster dedupes.
        again = _tick(setup, instance)
        assert [r.run_key for r in again.run_requests or []] == ["job-urgent", "job-normal"]
