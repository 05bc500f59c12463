"""Messages and plain Kafka against a real broker (noida-db): schemas, client settings,
publish with acknowledgements, offset-based reads, and a broker outage."""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaError

from batch_inference_platform.config import KafkaSettings
from batch_inference_platform.lib.messaging.kafka import (
    KafkaConfigError,
    KafkaNotConfigured,
    KafkaPublisher,
    PublishError,
    client_config,
    ensure_topics,
    is_permanent,
    producer_config,
    read_batch,
)
from batch_inference_platform.lib.messaging.schemas import (
    ErrorMessage,
    InferenceRequestMessage,
    MessageSchemaError,
    OutputMessage,
    StatusMessage,
    decode,
    decode_request,
    encode,
)
from batch_inference_platform.lib.messaging.settings import KafkaConfig
from batch_inference_platform_tests.kafka_broker import KafkaBroker

NOW = dt.datetime(2026, 11, 28, 9, 30, tzinfo=dt.UTC)


def kafka_settings(bootstrap: str, **overrides: object) -> KafkaSettings:
    """The seed's Kafka settings pointed at ``bootstrap``."""
    doc = {
        "bootstrap-servers": bootstrap,
        "client-config": {},
        "sasl-password-env": "",
        "topics": {
            "input": "batch-inference-input",
            "output": "batch-inference-output",
            "status": "batch-inference-status",
            "errors": "batch-inference-errors",
        },
        "batch-size": 10000,
        "linger-ms": 5,
        "buffer-memory": 33554432,
        **overrides,
    }
    return KafkaSettings.model_validate(doc)


def kafka_config(bootstrap: str, **overrides: object) -> KafkaConfig:
    """``kafka_settings`` as the Kafka client takes them."""
    return kafka_settings(bootstrap, **overrides).as_config()


def request(job_id: str = "job-1", **changes: object) -> InferenceRequestMessage:
    fields = {
        "job_id": job_id,
        "tenant": "acme",
        "deployment": "credit_risk",
        "model": "credit_risk_default@champion",
        "feature_table": "validated/credit_risk",
        "start_date": dt.date(2026, 11, 2),
        "end_date": dt.date(2026, 11, 3),
        "priority": "high",
        "output_table": "scores/daily",
        "submitted_at": NOW,
        **changes,
    }
    return InferenceRequestMessage.model_validate(fields)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    with KafkaBroker(tmp_path_factory.mktemp("kafka") / "data") as running:
        yield running


# ---------------------------------------------------------------------- schemas


def test_every_message_round_trips_as_compact_json() -> None:
    messages = [
        request(),
        StatusMessage(job_id="j", tenant="acme", status="started", at=NOW, dagster_run_id="r1"),
        OutputMessage(
            job_id="j",
            tenant="acme",
            deployment="credit_risk",
            table="scores/daily",
            partitions=["2026-11-02", "2026-11-03"],
            rows=1200,
            model_name="credit_risk_default",
            model_version=3,
            dagster_run_id="r1",
            finished_at=NOW,
        ),
        ErrorMessage(
            job_id="j",
            tenant="acme",
            dagster_run_id=None,
            error="boom",
            failed_step="predictions",
            metrics={"rows": 10.0},
            at=NOW,
        ),
    ]
    versions = [2, 1, 2, 1]  # requests and outputs name the deployment since version 2
    for message, version in zip(messages, versions, strict=True):
        data = encode(message)
        assert b'", "' not in data and b'": ' not in data  # compact
        assert json.loads(data)["schema_version"] == version
        assert decode(type(message), data) == message


def test_a_version_1_request_reads_as_one_for_the_credit_risk_deployment() -> None:
    """Requests stored or in flight before deployments were named (the platform's one use
    case then) still read; ``decode`` itself takes version 2 only."""
    doc = {**json.loads(encode(request())), "schema_version": 1}
    del doc["deployment"]
    data = json.dumps(doc).encode()
    assert decode_request(data) == request()
    with pytest.raises(MessageSchemaError, match=r"unsupported schema_version 1 \(supported: 2\)"):
        decode(InferenceRequestMessage, data)
    unpartitioned = request(start_date=None, end_date=None)
    assert decode_request(encode(unpartitioned)) == unpartitioned
    with pytest.raises(ValueError, match="both set or both null"):
        request(end_date=None)


def test_timestamps_are_utc_and_naive_ones_are_refused() -> None:
    cet = dt.timezone(dt.timedelta(hours=1))
    message = request(submitted_at=dt.datetime(2026, 11, 28, 10, 30, tzinfo=cet))
    assert message.submitted_at == NOW and message.submitted_at.tzinfo == dt.UTC
    data = encode(request()).replace(b"2026-11-28T09:30:00Z", b"2026-11-28T09:30:00")
    with pytest.raises(MessageSchemaError, match=r"submitted_at: .*timezone"):
        decode(InferenceRequestMessage, data)


def _request_doc() -> dict[str, object]:
    return json.loads(encode(request()))


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"{not json", r"InferenceRequestMessage: invalid JSON"),
        (b"\xff\xfe", r"invalid JSON"),
        (b"[1, 2]", r"expected a JSON object, got list"),
        ({"schema_version": 3}, r"unsupported schema_version 3 \(supported: 2\)"),
        ({"schema_version": "1"}, r"unsupported schema_version '1'"),
        ({"schema_version": None}, r"unsupported schema_version None"),
        ({"end_date": "someday"}, r"end_date: Input should be a valid date"),
        ({"end_date": None}, r"start_date and end_date are both set or both null"),
        ({"priority": "asap"}, r"priority: Input should be 'normal', 'high' or 'urgent'"),
        ({"end_date": "2026-11-01"}, r"end_date 2026-11-01 is before start_date 2026-11-02"),
        ({"colour": "blue"}, r"colour: unknown field"),
    ],
)
def test_bad_messages_are_refused_with_what_is_wrong(
    data: bytes | dict[str, object], expected: str
) -> None:
    if isinstance(data, dict):
        data = json.dumps({**_request_doc(), **data}).encode()
    with pytest.raises(MessageSchemaError, match=expected) as caught:
        decode(InferenceRequestMessage, data)
    assert "pydantic" not in str(caught.value) and "\n" not in str(caught.value)


def test_missing_fields_and_version_are_named() -> None:
    doc = _request_doc()
    del doc["end_date"], doc["tenant"]
    with pytest.raises(MessageSchemaError) as caught:
        decode(InferenceRequestMessage, json.dumps(doc).encode())
    assert str(caught.value) == (
        "InferenceRequestMessage: tenant: required field is missing; "
        "end_date: required field is missing"
    )
    del doc["schema_version"]
    with pytest.raises(MessageSchemaError, match="schema_version is missing"):
        decode(InferenceRequestMessage, json.dumps(doc).encode())
    status = StatusMessage(job_id="j", tenant="t", status="queued", at=NOW)
    nested = ErrorMessage(
        job_id="j", tenant="t", dagster_run_id=None, error="e", failed_step=None, metrics={}, at=NOW
    )
    bad = {**json.loads(encode(nested)), "metrics": {"rows": "many"}}
    with pytest.raises(MessageSchemaError, match=r"metrics\.rows: Input should be a valid number"):
        decode(ErrorMessage, json.dumps(bad).encode())
    with pytest.raises(MessageSchemaError, match="unknown field"):
        decode(ErrorMessage, encode(status))


# ---------------------------------------------------------------------- settings


def test_topics_come_from_the_settings() -> None:
    topics = kafka_config("h:9092").topics
    assert topics.input == "batch-inference-input"
    assert topics.all() == [
        "batch-inference-input",
        "batch-inference-output",
        "batch-inference-status",
        "batch-inference-errors",
    ]


def test_producer_config_carries_the_settings() -> None:
    kafka = kafka_config(
        "broker-1:9093,broker-2:9093",
        **{"client-config": {"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN"}},
        **{"batch-size": 20000, "linger-ms": 50, "buffer-memory": 8 * 1024 * 1024},
    )
    config = producer_config(kafka)
    assert config["bootstrap.servers"] == "broker-1:9093,broker-2:9093"
    assert config["security.protocol"] == "SASL_SSL" and config["sasl.mechanism"] == "PLAIN"
    assert config["enable.idempotence"] is True and config["acks"] == "all"
    assert config["batch.size"] == 20000 and config["linger.ms"] == 50
    assert config["queue.buffering.max.kbytes"] == 8192
    assert 0 < int(config["message.timeout.ms"]) <= 60_000
    assert "sasl.password" not in config


def test_sasl_password_comes_from_the_named_environment_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kafka = kafka_config("ns.servicebus.windows.net:9093", **{"sasl-password-env": "EH_CONN"})
    monkeypatch.setenv("EH_CONN", "Endpoint=sb://ns/;SharedAccessKey=s3cret")
    assert client_config(kafka)["sasl.password"] == "Endpoint=sb://ns/;SharedAccessKey=s3cret"
    assert producer_config(kafka)["sasl.password"] == "Endpoint=sb://ns/;SharedAccessKey=s3cret"
    monkeypatch.delenv("EH_CONN")
    with pytest.raises(KafkaConfigError, match="sasl-password-env names EH_CONN, but that"):
        client_config(kafka)
    with pytest.raises(KafkaNotConfigured, match="bootstrap-servers is empty"):
        client_config(kafka_config(""))


# ---------------------------------------------------------------------- broker


def test_publish_then_read_by_offsets(broker: KafkaBroker) -> None:
    kafka = kafka_config(broker.bootstrap)
    ensure_topics(kafka, ["roundtrip"], partitions=3)
    ensure_topics(kafka, ["roundtrip"], partitions=3)  # exists: fine
    sent = [("roundtrip", f"job-{n % 5}", f"{n}".encode()) for n in range(30)]
    with KafkaPublisher(kafka) as publisher:
        publisher.publish(sent)

    records, offsets = read_batch(kafka, "roundtrip", {}, max_messages=100, timeout_seconds=10)
    assert sorted(r.value for r in records) == sorted(v for _, _, v in sent)
    assert {r.partition for r in records} == {0, 1, 2}  # keys spread over the partitions
    assert offsets == {p: max(r.offset for r in records if r.partition == p) + 1 for p in range(3)}
    for key in {k for _, k, _ in sent}:  # one key: one partition, in publish order
        mine = [r for r in records if r.key == key]
        assert len({r.partition for r in mine}) == 1
        assert [r.value for r in mine] == [v for _, k, v in sent if k == key]
        assert [r.offset for r in mine] == sorted(r.offset for r in mine)

    started = time.monotonic()
    again, same = read_batch(kafka, "roundtrip", offsets, max_messages=100, timeout_seconds=10)
    assert (again, same) == ([], offsets)
    assert time.monotonic() - started < 2, "nothing new must return at once, not at the timeout"
    replay, _ = read_batch(kafka, "roundtrip", {}, max_messages=100, timeout_seconds=10)
    assert sorted(replay, key=str) == sorted(records, key=str)


def test_reading_in_small_batches_is_deterministic_and_complete(broker: KafkaBroker) -> None:
    kafka = kafka_config(broker.bootstrap)
    ensure_topics(kafka, ["paged"], partitions=3)
    with KafkaPublisher(kafka) as publisher:
        publisher.publish([("paged", f"k{n}", f"{n}".encode()) for n in range(25)])
    offsets: dict[int, int] = {}
    seen = []
    while True:
        page, after = read_batch(kafka, "paged", offsets, max_messages=7, timeout_seconds=10)
        assert read_batch(kafka, "paged", offsets, max_messages=7, timeout_seconds=10) == (
            page,
            after,
        )
        if not page:
            break
        assert len(page) <= 7
        seen += page
        offsets = after
    assert sorted(int(r.value) for r in seen) == list(range(25))
    missing, unchanged = read_batch(
        kafka, "no-such-topic", {0: 4}, max_messages=5, timeout_seconds=5
    )
    assert (missing, unchanged) == ([], {0: 4})


def test_broker_outage_fails_publishing_within_the_timeout(tmp_path: Path) -> None:
    with KafkaBroker(tmp_path / "kafka") as outage:
        kafka = kafka_config(outage.bootstrap)
        ensure_topics(kafka, ["durable"], partitions=3)
        with KafkaPublisher(kafka) as publisher:
            publisher.publish([("durable", f"k{n}", b"before") for n in range(6)])
        outage.stop()

        started = time.monotonic()
        with (
            KafkaPublisher(kafka, timeout_seconds=1.5) as publisher,
            pytest.raises(PublishError, match="durable: ") as caught,
        ):
            publisher.publish([("durable", "k1", b"during"), ("durable", "k2", b"during")])
        assert time.monotonic() - started < 1.5 + 3, "a broker outage must not hang publishing"
        assert "2 of 2 messages not published" in str(caught.value)

        outage.start()  # same port, same data: what was acknowledged before is still there
        records, _ = read_batch(kafka, "durable", {}, max_messages=50, timeout_seconds=10)
        assert [r.value for r in records] == [b"before"] * 6
        with KafkaPublisher(kafka) as publisher:
            publisher.publish([("durable", "k1", b"after")])
        records, _ = read_batch(kafka, "durable", {}, max_messages=50, timeout_seconds=10)
        assert sorted(r.value for r in records) == [b"after"] + [b"before"] * 6


def test_a_refused_message_fails_the_publish_with_its_topic(broker: KafkaBroker) -> None:
    kafka = kafka_config(broker.bootstrap)
    ensure_topics(kafka, ["refused"], partitions=1)
    with KafkaPublisher(kafka, timeout_seconds=5) as publisher:
        with pytest.raises(PublishError, match=r"refused: .*too large"):
            publisher.publish([("refused", "k", b"ok"), ("refused", "k", b"x" * 2_000_000)])
        publisher.publish([("refused", "k", b"next")])  # the publisher stays usable
    records, _ = read_batch(kafka, "refused", {}, max_messages=10, timeout_seconds=10)
    assert [r.value for r in records] in ([b"next"], [b"ok", b"next"])  # "ok" may have gone out


# ---------------------------------------------------------------------- per-message outcomes


def test_only_refusals_of_the_message_itself_are_permanent() -> None:
    permanent = [
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.INVALID_RECORD,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._UNKNOWN_TOPIC,
    ]
    transient = [
        KafkaError._MSG_TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.NOT_ENOUGH_REPLICAS,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError._FATAL,
    ]
    assert all(is_permanent(KafkaError(code)) for code in permanent)
    assert not any(is_permanent(KafkaError(code)) for code in transient)


def test_deliver_reports_each_message_and_sends_the_rest(broker: KafkaBroker) -> None:
    """The broker refuses whole record batches: small messages batched with an oversized one
    are refused with it, and accepted when sent alone; the oversized one never is."""
    kafka = kafka_config(broker.bootstrap)
    ensure_topics(kafka, ["limited"], partitions=1, config={"max.message.bytes": "2000"})
    small, big = b"s" * 100, b"B" * 5000
    with KafkaPublisher(kafka, timeout_seconds=5) as publisher:
        batch = publisher.deliver([("limited", "k", small), ("limited", "k", big)])
        assert batch[1] is not None and batch[1].permanent and batch[1].batch
        assert "MSG_SIZE_TOO_LARGE" in batch[1].reason
        alone = [publisher.deliver([message]) for message in [("limited", "k", small)] * 2]
        assert alone == [[None], [None]]
        again = publisher.deliver([("limited", "k", big)])[0]
        assert again is not None and again.permanent
    records, _ = read_batch(kafka, "limited", {}, max_messages=10, timeout_seconds=10)
    assert [r.value for r in records] in ([small] * 2, [small] * 3)  # "small" may have gone out

    # The producer's own limit: refused before sending, the others go out.
    capped = kafka_config(broker.bootstrap, **{"client-config": {"message.max.bytes": "3000"}})
    ensure_topics(kafka, ["capped"], partitions=1)
    with KafkaPublisher(capped, timeout_seconds=5) as publisher:
        outcomes = publisher.deliver(
            [("capped", "a", b"1"), ("capped", "b", big), ("capped", "c", b"3")]
        )
    assert outcomes[0] is None and outcomes[2] is None
    assert outcomes[1] is not None and outcomes[1].permanent
    assert not outcomes[1].batch, "refused by the client itself, before batching"
    assert outcomes[1].reason.startswith("MSG_SIZE_TOO_LARGE (")
    assert outcomes[1].reason.endswith("Message size too large)")
    records, _ = read_batch(kafka, "capped", {}, max_messages=10, timeout_seconds=10)
    assert [r.value for r in records] == [b"1", b"3"]


def test_a_topic_that_does_not_exist_is_a_permanent_refusal(broker: KafkaBroker) -> None:
    no_auto_create = {"client-config": {"allow.auto.create.topics": "false"}}
    kafka = kafka_config(broker.bootstrap, **no_auto_create)
    ensure_topics(kafka, ["exists"], partitions=1)
    started = time.monotonic()
    with KafkaPublisher(kafka, timeout_seconds=2) as publisher:
        outcomes = publisher.deliver([("exists", "k", b"1"), ("does-not-exist", "k", b"2")])
    assert outcomes[0] is None
    assert outcomes[1] is not None and outcomes[1].permanent and not outcomes[1].batch
    assert "UNKNOWN_TOPIC" in outcomes[1].reason
    assert time.monotonic() - started < 2 + 2


def test_a_broker_outage_is_transient_and_logged_by_the_caller_not_per_reconnect(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with KafkaBroker(tmp_path / "kafka") as outage:
        kafka = kafka_config(outage.bootstrap)
        ensure_topics(kafka, ["down"], partitions=1)
        outage.stop()
        caplog.set_level(logging.DEBUG, logger="batch_inference_platform.lib.messaging.kafka")
        with KafkaPublisher(kafka, timeout_seconds=1) as publisher:
            outcomes = publisher.deliver([("down", "k", b"1"), ("down", "k", b"2")])
    assert all(o is not None and not o.permanent for o in outcomes)
    assert outcomes[0] is not None and "Connection refused" in outcomes[0].reason
    reconnects = [r for r in caplog.records if "Connection refused" in r.getMessage()]
    assert reconnects, "librdkafka's reconnect attempts are still logged, at debug level"
    assert all(r.levelno == logging.DEBUG for r in reconnects)
