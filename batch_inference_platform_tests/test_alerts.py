"""Job-failure alerts end to end: a real job fails in a real (test) Dagster instance, the real
``job_failure_alerts`` sensor is evaluated on that failure, and real receivers on loopback -
an HTTP server standing in for Slack and for the webhook, an SMTP server - get the alert."""

import datetime as dt
import hashlib
import hmac
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import dagster as dg
import pytest

from batch_inference_platform.config import load_settings
from batch_inference_platform.defs.monitoring.alerts import job_failure_alerts
from batch_inference_platform.defs.resources import AlertsResource, from_settings
from batch_inference_platform.lib.alerts import Alert
from batch_inference_platform.lib.alerts.channels import ChannelNotConfigured, EmailChannel

from .servers import free_port
from .sinks import HttpSink, SmtpSink, http_sink, smtp_sink

SLACK_PATH = "/services/T0001/B0001/slack-token-do-not-log"
WEBHOOK_SECRET = "webhook-secret-do-not-log"
SMTP_USER, SMTP_PASSWORD = "alerts-bot", "smtp-password-do-not-log"
SECRETS = ("slack-token-do-not-log", WEBHOOK_SECRET, SMTP_PASSWORD, "hook-token-do-not-log")
ERROR = "model v3 rejected partition 2026-11-02: 12 non-finite scores"


class ScoreConfig(dg.Config):
    fail: bool = True


@dg.op
def load_features() -> int:
    return 3


@dg.op
def score(config: ScoreConfig, rows: int) -> int:
    if config.fail:
        raise ValueError(ERROR)
    return rows


@dg.job(tags={"tenant": "acme"})
def nightly_scoring() -> None:
    score(load_features())


@dataclass
class Receivers:
    slack: HttpSink
    webhook: HttpSink
    smtp: SmtpSink


@pytest.fixture
def receivers(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receivers]:
    """Slack, webhook and SMTP sinks, and the environment variables monitoring.yml names set
    to reach them."""
    with (
        http_sink() as slack,
        http_sink() as webhook,
        smtp_sink((SMTP_USER, SMTP_PASSWORD)) as smtp,
    ):
        monkeypatch.setenv("SLACK_WEBHOOK_URL", slack.url + SLACK_PATH)
        monkeypatch.setenv("ALERT_WEBHOOK_URL", webhook.url + "/alerts?token=hook-token-do-not-log")
        monkeypatch.setenv("ALERT_WEBHOOK_SECRET", WEBHOOK_SECRET)
        monkeypatch.setenv("SMTP_USERNAME", SMTP_USER)
        monkeypatch.setenv("SMTP_PASSWORD", SMTP_PASSWORD)
        yield Receivers(slack, webhook, smtp)


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


def alerts_resource(smtp: SmtpSink, **overrides: str) -> AlertsResource:
    """monitoring.yml as shipped, with the SMTP server moved to the sink (and ``overrides``
    as ``BIP__`` environment overrides)."""
    environ = {
        "BIP__ALERTS__CHANNELS__EMAIL__SMTP_HOST": smtp.host,
        "BIP__ALERTS__CHANNELS__EMAIL__SMTP_PORT": str(smtp.port),
        **overrides,
    }
    return from_settings.alerts(load_settings(environ=environ))


def run_job(instance: dg.DagsterInstance, *, fail: bool = True) -> dg.ExecuteInProcessResult:
    return nightly_scoring.execute_in_process(
        instance=instance,
        raise_on_error=False,
        run_config={"ops": {"score": {"config": {"fail": fail}}}},
    )


class Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def evaluate(
    instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult, alerts: AlertsResource
) -> tuple[dg.SkipReason | None, list[str]]:
    """One evaluation of the real sensor on ``result``'s failure; what it returned and logged."""
    context = dg.build_run_status_sensor_context(
        sensor_name="job_failure_alerts",
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        dagster_event=result.get_run_failure_event(),
        resources={"alerts": alerts},
    )
    captured = Captured()
    context.log.addHandler(captured)
    outcome = job_failure_alerts(context)
    assert outcome is None or isinstance(outcome, dg.SkipReason)
    return outcome, captured.lines


def test_a_failed_run_alerts_every_channel(
    receivers: Receivers, instance: dg.DagsterInstance, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    result = run_job(instance)
    assert not result.success
    run_id = result.run_id
    link = f"http://127.0.0.1:3000/runs/{run_id}"

    outcome, logs = evaluate(instance, result, alerts_resource(receivers.smtp))

    assert outcome is None
    [slack] = receivers.slack.requests
    assert slack.path == SLACK_PATH
    message = json.loads(slack.body)
    rendered = json.dumps(message)
    assert message["text"].startswith("nightly_scoring failed")
    assert link in message["text"]
    for fact in (link, "nightly_scoring", run_id, "score", ERROR, "acme"):
        assert fact in rendered, fact
    assert message["blocks"][0]["text"]["text"] == "nightly_scoring failed"

    [hook] = receivers.webhook.requests
    expected = hmac.new(WEBHOOK_SECRET.encode(), hook.body, hashlib.sha256).hexdigest()
    assert hook.headers["x-bip-signature"] == f"sha256={expected}"
    assert hook.headers["content-type"] == "application/json"
    payload = json.loads(hook.body)
    assert payload["job_name"] == "nightly_scoring"
    assert payload["run_id"] == run_id
    assert payload["failed_steps"] == ["score"]
    assert payload["error"] == f"ValueError: {ERROR}"
    assert payload["where"] == {"tenant": "acme"}
    assert payload["deployment"] is None  # not a deployment's job
    assert payload["link"] == link
    assert payload["severity"] == "error"
    assert dt.datetime.fromisoformat(payload["at"]) <= dt.datetime.now(dt.UTC)

    [mail] = receivers.smtp.mails
    assert mail.login == SMTP_USER
    assert mail.mail_from == "batch-inference@localhost"
    assert mail.rcpt_tos == ["oncall@localhost"]
    assert mail.message["Subject"] == "[batch-inference] nightly_scoring failed"
    body = mail.message.get_content()
    for fact in (link, run_id, "Failed steps: score", ERROR, "Tenant: acme"):
        assert fact in body, fact

    assert any("sent to email" in line for line in logs)
    _assert_no_secrets([*logs, caplog.text])


@dg.asset(key=["churn", "predictions"])
def churn_predictions() -> None:
    raise ValueError(ERROR)


churn_scoring = dg.define_asset_job("churn__score_partition_job", selection=[churn_predictions])


def test_a_failed_deployment_run_names_the_deployment(
    receivers: Receivers, instance: dg.DagsterInstance
) -> None:
    """From the job's ``<name>__`` prefix, the ``deployment`` tag (re-score runs) and the
    asset keys (a materialization launched from the UI)."""
    defs = dg.Definitions(assets=[churn_predictions], jobs=[churn_scoring])
    by_job = defs.resolve_job_def("churn__score_partition_job").execute_in_process(
        instance=instance, raise_on_error=False
    )
    by_tag = nightly_scoring.execute_in_process(
        instance=instance,
        raise_on_error=False,
        run_config={"ops": {"score": {"config": {"fail": True}}}},
        tags={"deployment": "credit_risk"},
    )
    by_keys = dg.materialize([churn_predictions], instance=instance, raise_on_error=False)
    alerts = alerts_resource(receivers.smtp)
    for result in (by_job, by_tag, by_keys):
        assert not result.success
        evaluate(instance, result, alerts)

    payloads = [json.loads(request.body) for request in receivers.webhook.requests]
    assert [(p["deployment"], p["title"]) for p in payloads] == [
        ("churn", "churn__score_partition_job failed"),
        ("credit_risk", "credit_risk: nightly_scoring failed"),
        ("churn", "churn: __ephemeral_asset_job__ failed"),
    ]
    body = receivers.smtp.mails[1].message.get_content()
    assert "Deployment: credit_risk" in body
    fields = json.loads(receivers.slack.requests[2].body)["blocks"][1]["fields"]
    assert fields[0]["text"] == "*Deployment*\nchurn"


def test_a_channel_that_cannot_be_reached_fails_alone(
    receivers: Receivers,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    closed = f"http://127.0.0.1:{free_port()}{SLACK_PATH}"
    monkeypatch.setenv("SLACK_WEBHOOK_URL", closed)

    _, logs = evaluate(instance, run_job(instance), alerts_resource(receivers.smtp))

    assert receivers.slack.requests == []
    assert len(receivers.webhook.requests) == 1
    assert len(receivers.smtp.mails) == 1
    assert any("channel slack failed: cannot reach the server" in line for line in logs)
    _assert_no_secrets([*logs, caplog.text])


def test_threshold_two_alerts_on_the_second_failure_in_a_row(
    receivers: Receivers, instance: dg.DagsterInstance
) -> None:
    alerts = alerts_resource(receivers.smtp, BIP__ALERTS__JOB_FAILURE__THRESHOLD="2")
    assert alerts.threshold == 2

    first, _ = evaluate(instance, run_job(instance), alerts)
    assert isinstance(first, dg.SkipReason)
    assert "failed 1 time(s) in a row" in str(first.skip_message)
    assert receivers.slack.requests == receivers.webhook.requests == []
    assert receivers.smtp.mails == []

    second, _ = evaluate(instance, run_job(instance), alerts)
    assert second is None
    payload = json.loads(receivers.webhook.requests[0].body)
    assert payload["title"] == "nightly_scoring failed 2 times in a row"
    assert payload["severity"] == "critical"
    assert len(receivers.slack.requests) == len(receivers.smtp.mails) == 1

    # A success ends the streak: the next failure is the first of a new one.
    assert run_job(instance, fail=False).success
    third, _ = evaluate(instance, run_job(instance), alerts)
    assert isinstance(third, dg.SkipReason)
    assert len(receivers.webhook.requests) == 1


def test_an_unset_variable_is_reported_as_not_configured(
    receivers: Receivers, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Other code (e.g. the Databricks quota retry) raises alerts through the resource."""
    caplog.set_level(logging.DEBUG)
    monkeypatch.delenv("SLACK_WEBHOOK_URL")
    alerts = alerts_resource(receivers.smtp)
    alert = Alert(
        title="Databricks quota exhausted",
        job_name="score_partition_job",
        run_id="r-123",
        error="QUOTA_EXCEEDED: 8 workers requested",
        link=alerts.link("r-123"),
        at=dt.datetime.now(dt.UTC),
        severity="warning",
    )

    outcome = alerts.alert(alert)

    assert outcome == {
        "slack": "not configured: SLACK_WEBHOOK_URL is not set",
        "email": None,
        "webhook": None,
    }
    assert receivers.slack.requests == []
    assert (
        receivers.smtp.mails[0].message["Subject"] == "[batch-inference] Databricks quota exhausted"
    )
    assert json.loads(receivers.webhook.requests[0].body)["link"] == alerts.link("r-123")
    _assert_no_secrets([caplog.text])


def test_an_http_error_and_a_refused_login_are_reported_without_secrets(
    receivers: Receivers, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    receivers.webhook.status = 500
    monkeypatch.setenv("SMTP_PASSWORD", "wrong-" + SMTP_PASSWORD)
    alerts = alerts_resource(receivers.smtp)
    alert = Alert("t", "j", "r", "e", alerts.link("r"), dt.datetime.now(dt.UTC))

    outcome = alerts.alert(alert)

    assert outcome["slack"] is None
    assert outcome["webhook"] == "HTTP 500 Internal Server Error"
    assert (outcome["email"] or "").startswith("SMTP 535")
    assert receivers.smtp.mails == []
    _assert_no_secrets([caplog.text, *(v or "" for v in outcome.values())])


def test_the_sensor_loads_with_its_resource() -> None:
    defs = dg.Definitions(
        jobs=[nightly_scoring],
        sensors=[job_failure_alerts],
        resources={"alerts": from_settings.alerts(load_settings())},
    )
    sensor = defs.resolve_sensor_def("job_failure_alerts")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    dg.Definitions.validate_loadable(defs)


def _assert_no_secrets(texts: list[str]) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text


def test_smtp_credentials_never_go_to_a_remote_server_in_the_clear() -> None:
    channel = EmailChannel(
        smtp_host="smtp.example.com",
        smtp_port=25,
        sender="bip@example.com",
        recipients=["oncall@example.com"],
        starttls=False,
        username_env="SMTP_USERNAME",
        password_env="SMTP_PASSWORD",
        environ={"SMTP_USERNAME": "bip", "SMTP_PASSWORD": "hunter2"},
    )
    alert = Alert("t", "j", "r", "e", "http://ui/runs/r", dt.datetime.now(dt.UTC))
    with pytest.raises(ChannelNotConfigured, match="without STARTTLS"):
        channel.send(alert)
