"""Serving-model resolution against the registry: a champion whose signature does not fit the
validated features, or that fails the smoke test, is passed over - loudly, and tagged in
MLflow - for the last approved champion (the version that last served); with no such version
the run fails saying which model and why."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

import dagster as dg
import lightgbm as lgb
import mlflow
import mlflow.lightgbm as mlflow_lightgbm
import mlflow.pyfunc
import numpy as np
import pytest
from mlflow import MlflowClient
from mlflow.models.signature import ModelSignature
from mlflow.pyfunc.model import PythonModel
from mlflow.types.schema import ColSpec, Schema

from batch_inference_platform.defs.models.assets import REFUSED_TAG
from batch_inference_platform.defs.models.sensors import REQUESTED_VERSION_TAG
from batch_inference_platform.defs.models.serving import OUTCOME_TAG
from batch_inference_platform.lib.features.synthetic import CREDIT_FEATURES

from .conftest import (
    DAY_A,
    Platform,
    PlatformFactory,
    check_evaluations,
    failure_messages,
    materializations,
    read_all,
    read_day,
)
from .model_shapes import tracking
from .sinks import http_sink

BROKEN_MODEL = "credit_risk_unservable"
NAN_MODEL = "credit_risk_nan_scores"
MISSING_INPUT = "bureau_segment_score"
MODEL_FEATURES = CREDIT_FEATURES
"""The credit_risk contract's columns: the demo model's 30 numeric inputs."""


def _register(platform: Platform, name: str, signature: ModelSignature) -> int:
    """Register a tiny LightGBM model under ``name`` with ``signature``; give it the alias."""
    rng = np.random.default_rng(0)
    features = rng.normal(size=(200, len(MODEL_FEATURES)))
    booster = lgb.train(
        {"objective": "binary", "verbose": -1, "num_threads": 1},
        lgb.Dataset(features, (features[:, 0] > 0).astype(int)),
        num_boost_round=2,
    )
    experiment = platform.settings.application.mlflow.experiment
    client = MlflowClient(platform.registry.tracking_uri, platform.registry.registry_uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, "the demo model's training creates the experiment"
    with tracking(platform), mlflow.start_run(experiment_id=found.experiment_id):
        info = mlflow_lightgbm.log_model(
            booster,
            name="model",
            signature=signature,
            registered_model_name=name,
            pip_requirements=["lightgbm"],
        )
    version = info.registered_model_version
    assert version is not None
    client.set_registered_model_alias(name, platform.alias, str(version))
    return int(version)


class NanScores(PythonModel):
    """A model that loads and fits the schema but scores every row as NaN."""

    def predict(self, context, model_input, params=None) -> Any:
        return np.full(len(model_input), np.nan)


def _register_nan_scorer(platform: Platform, name: str) -> int:
    experiment = platform.settings.application.mlflow.experiment
    client = MlflowClient(platform.registry.tracking_uri, platform.registry.registry_uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None
    with tracking(platform), mlflow.start_run(experiment_id=found.experiment_id):
        info = mlflow.pyfunc.log_model(  # type: ignore[attr-defined]
            name="model",
            python_model=NanScores(),
            signature=_signature(),
            registered_model_name=name,
            pip_requirements=["numpy"],
        )
    version = int(info.registered_model_version or 0)
    client.set_registered_model_alias(name, platform.alias, str(version))
    return version


def _signature(string_column: str | None = None, extra: str | None = None) -> ModelSignature:
    specs = [ColSpec("string" if n == string_column else "double", n) for n in MODEL_FEATURES]
    if extra:
        specs.append(ColSpec("double", extra))
    return ModelSignature(inputs=Schema(specs))  # type: ignore[arg-type]


def _serving(make_platform: PlatformFactory, base: Platform, name: str, model: str) -> Platform:
    """Deployment ``name``: credit_risk's source table and contract, scored by ``model``, on
    the same lake, registry and Dagster instance as ``base`` (its own validated and prediction
    tables)."""
    platform = make_platform(
        "unused",
        share=base,
        deployment={"name": name, "model": {"name": model}},
        REALTIME__DEPLOYMENT=name,
    )
    platform = replace(platform, deployment_name=name)
    assert platform.deployment.source_uri == base.deployment.source_uri
    return platform


@dataclass
class Fallback:
    platform: Platform
    champion: int
    result: dg.ExecuteInProcessResult


@pytest.fixture(scope="module")
def fallback(make_platform: PlatformFactory) -> Fallback:
    """v1 = the demo model, served once (the approved champion); v2 needs ``annual_income``
    as a string and takes the alias."""
    platform = make_platform("model_fallback")
    assert platform.generate(DAY_A).success
    assert platform.train().success
    assert platform.registry.by_alias(platform.model_name, platform.alias).version == 1
    assert platform.score(DAY_A).success
    champion = _register(platform, platform.model_name, _signature(string_column="annual_income"))
    return Fallback(platform, champion, platform.score(DAY_A))


def test_incompatible_champion_holds_the_alias(fallback: Fallback) -> None:
    platform = fallback.platform
    assert fallback.champion == 2
    holder = platform.registry.by_alias(platform.model_name, platform.alias)
    assert holder.version == 2
    assert [v.version for v in platform.registry.versions(platform.model_name)] == [2, 1]


def test_scores_with_the_last_approved_champion(fallback: Fallback) -> None:
    platform, result = fallback.platform, fallback.result
    assert result.success
    predictions = read_day(platform.predictions, DAY_A)
    assert predictions.num_rows > 0
    assert set(predictions.column("model_version").to_pylist()) == {1}
    assert set(predictions.column("run_id").to_pylist()) == {result.run_id}
    assert materializations(result)["predictions"]["model_version"] == "1"
    catalog = [r for r in read_all(platform.layout.catalog).to_pylist() if r["model_name"]]
    assert [(r["deployment"], r["dataset"], r["model_version"]) for r in catalog] == [
        (platform.deployment.name, "predictions", 1)
    ] * 2


def test_fallback_is_reported_in_metadata(fallback: Fallback) -> None:
    meta = materializations(fallback.result)["model_versions"]
    assert meta["fell_back"] is True
    assert meta["model_version"] == "1"
    assert meta["alias_holder_version"] == "2"
    assert meta["alias"] == fallback.platform.alias


def test_a_promotion_of_a_refused_version_scores_nothing(fallback: Fallback) -> None:
    """A re-scoring run requested for v2 (the promoted version) scores v2 or nothing: v2
    fails validation, so nothing is written - not v1's predictions under v2's name."""
    platform = fallback.platform
    before = platform.predictions.open().version()
    result = platform.job("rescore_job").execute_in_process(
        partition_key=DAY_A.isoformat(),
        instance=platform.instance,
        tags={REQUESTED_VERSION_TAG: "2"},
    )
    assert result.success
    assert set(materializations(result)) == set()  # model_versions yields nothing to score
    assert platform.predictions.open().version() == before
    run = platform.instance.get_run_by_id(result.run_id)
    assert run is not None and run.tags[OUTCOME_TAG] == "refused v2"
    check = check_evaluations(result)["champion_passes_validation"]
    assert check.passed is False and check.description is not None
    assert "requested for" in check.description and "v2" in check.description


def test_compatibility_check_warns_with_the_reason(fallback: Fallback) -> None:
    check = check_evaluations(fallback.result)["champion_passes_validation"]
    assert check.passed is False
    assert check.severity == dg.AssetCheckSeverity.WARN
    assert check.description is not None
    assert check.description.startswith("Fell back from v2")
    assert "v2: input 'annual_income' needs string, the table has double" in check.description
    assert check.metadata["serving_version"].value == 1
    assert check.metadata["alias_holder_version"].value == 2


def test_no_compatible_version_fails_the_run(
    fallback: Fallback, make_platform: PlatformFactory
) -> None:
    """Same source, lake and registry, another deployment whose model's only version does
    not fit."""
    broken = _serving(make_platform, fallback.platform, "unservable", BROKEN_MODEL)
    _register(broken, BROKEN_MODEL, _signature(extra=MISSING_INPUT))
    result = broken.score(DAY_A)

    assert not result.success
    assert result.get_failed_step_keys() == {broken.op("model_versions")}
    message = failure_messages(result)
    assert f"model {BROKEN_MODEL!r}" in message
    assert f"alias {broken.alias!r} points at v1" in message
    assert f"input {MISSING_INPUT!r} (" in message
    assert "is not in the table" in message
    assert not broken.predictions.exists()


def test_a_champion_that_scores_nan_is_refused(
    fallback: Fallback, make_platform: PlatformFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """v1 fits and scores; v2 fits the schema but its smoke scores are NaN: v1 keeps serving,
    the check says why, the registry carries the refusal on v2 and on-call is alerted."""
    platform = _serving(make_platform, fallback.platform, "nan_scores", NAN_MODEL)
    assert _register(platform, NAN_MODEL, _signature()) == 1
    assert platform.score(DAY_A).success  # v1 serves once: the approved champion
    assert _register_nan_scorer(platform, NAN_MODEL) == 2
    with http_sink() as sink:
        monkeypatch.setenv("ALERT_WEBHOOK_URL", sink.url + "/alerts")
        result = platform.score(DAY_A)
    (alert,) = [json.loads(r.body) for r in sink.requests]
    assert alert["title"] == f"nan_scores: {NAN_MODEL} v2 refused"
    assert alert["severity"] == "warning"
    assert "1024 of 1024 smoke predictions are null or not finite" in alert["error"]
    assert alert["link"].endswith(f"/runs/{result.run_id}")

    assert result.success
    assert set(read_day(platform.predictions, DAY_A).column("model_version").to_pylist()) == {1}
    meta = materializations(result)["model_versions"]
    assert (meta["model_version"], meta["alias_holder_version"]) == ("1", "2")
    assert meta["smoke_rows"] == 1024
    check = check_evaluations(result)["champion_passes_validation"]
    assert check.passed is False
    assert check.description is not None
    assert (
        "v2: smoke test: 1024 of 1024 smoke predictions are null or not finite" in check.description
    )
    refused = platform.registry.client.get_model_version(NAN_MODEL, "2").tags
    assert (
        refused[REFUSED_TAG] == "smoke test: 1024 of 1024 smoke predictions are null or not finite"
    )
    assert REFUSED_TAG not in platform.registry.client.get_model_version(NAN_MODEL, "1").tags
