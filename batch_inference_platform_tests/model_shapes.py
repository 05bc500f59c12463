"""The model shapes data scientists register every day, trained on a platform's validated rows
and registered in its real MLflow registry - for the model-shape tests."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast

import lightgbm as lgb
import mlflow
import mlflow.lightgbm as mlflow_lightgbm
import mlflow.pyfunc
import mlflow.sklearn as mlflow_sklearn
import mlflow.xgboost as mlflow_xgboost
import numpy as np
import pandas as pd
import xgboost
from mlflow import MlflowClient
from mlflow.models import infer_signature
from mlflow.pyfunc.model import PythonModel
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from batch_inference_platform.lib.features.contract import Column
from batch_inference_platform.lib.features.synthetic import CATEGORICAL_COLUMNS, CREDIT_COLUMNS

from .conftest import Platform, read_day

STRINGS = [c.name for c in CATEGORICAL_COLUMNS]
NUMBERS = ["age", "annual_income", "loan_amount", "credit_score", "debt_to_income"]
INTEGERS = ["age", "loan_term_months", "credit_score"]
"""Required integer columns of the contract (never null in validated rows)."""


def contract(names: list[str] | None = None) -> dict[str, Any]:
    """A credit_risk ``contract`` for a deployment's YAML: the demo's columns named in
    ``names`` (default all of them, the 30 numeric and the 4 string ones), with their types
    and ranges."""
    chosen = [c for c in CREDIT_COLUMNS if names is None or c.name in names]
    assert names is None or len(chosen) == len(set(names)), names
    return {"columns": [_column_yaml(c) for c in chosen]}


def _column_yaml(column: Column) -> dict[str, Any]:
    """A contract column as ``defs.yaml`` declares it."""
    declared: dict[str, Any] = {"name": column.name, "type": column.kind.value}
    if column.required:
        declared["required"] = True
    if column.min_value is not None:
        declared["min"] = column.min_value
    if column.max_value is not None:
        declared["max"] = column.max_value
    if column.categories:
        declared["categories"] = list(column.categories)
    if column.max_null_rate is not None:
        declared["max_null_rate"] = column.max_null_rate
    return declared


def columns(frame: pd.DataFrame, names: list[str]) -> pd.DataFrame:
    """``frame[names]``, typed as the DataFrame it is."""
    return cast(pd.DataFrame, frame[names])


def validated_frame(platform: Platform, day: dt.date) -> pd.DataFrame:
    """The validated rows of ``day`` as pandas, in the table's types."""
    return read_day(platform.tables.validated, day).to_pandas()


def default_label(frame: pd.DataFrame) -> np.ndarray:
    """A learnable binary target from the features."""
    return ((frame["debt_to_income"].fillna(0) > 30) | (frame["credit_score"] < 580)).astype(int)


def risk_band(frame: pd.DataFrame) -> np.ndarray:
    """Three string classes from the credit score."""
    return np.where(
        frame["credit_score"] < 600, "high", np.where(frame["credit_score"] < 720, "mid", "low")
    )


def loss_amount(frame: pd.DataFrame) -> np.ndarray:
    """A regression target in the hundreds (so a clamp to [0, 1] would show)."""
    return frame["loan_amount"].to_numpy() / 100 + frame["age"].to_numpy()


def string_pipeline(frame: pd.DataFrame, target: np.ndarray) -> Pipeline:
    """One-hot string columns, scaled and imputed numerics, logistic regression."""
    transformer = ColumnTransformer(
        [
            ("strings", OneHotEncoder(handle_unknown="ignore"), STRINGS),
            ("numbers", make_pipeline(SimpleImputer(), StandardScaler()), NUMBERS),
        ]
    )
    model = Pipeline([("columns", transformer), ("model", LogisticRegression(max_iter=300))])
    return model.fit(columns(frame, STRINGS + NUMBERS), target)


class IntegerRisk(PythonModel):
    """A pyfunc over integer inputs that checks their types, as many hand-written ones do."""

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> Any:
        for name in INTEGERS:
            assert pd.api.types.is_integer_dtype(model_input[name]), model_input[name].dtype
        return own_integer_risk(model_input)


def own_integer_risk(frame: pd.DataFrame) -> np.ndarray:
    z = (frame["credit_score"] - 650) / 100 + (frame["age"] - 40) / 50
    return 1 / (1 + np.exp(z.to_numpy(np.float64)))


class Raising(PythonModel):
    """A model that loads and fits the schema but cannot score."""

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> Any:
        raise RuntimeError("scaler state missing: refit the pipeline")


@contextmanager
def tracking(platform: Platform) -> Iterator[None]:
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(platform.registry.tracking_uri)
    mlflow.set_registry_uri(platform.registry.registry_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous[0])
        mlflow.set_registry_uri(previous[1])


def register(platform: Platform, log: Callable[[str], Any], *, alias: bool = True) -> int:
    """Log a model with ``log(registered_model_name)`` in a run; give it the alias."""
    client = MlflowClient(platform.registry.tracking_uri, platform.registry.registry_uri)
    experiment = platform.settings.application.mlflow.experiment
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    with tracking(platform), mlflow.start_run(experiment_id=experiment_id):
        info = log(platform.model_name)
    version = int(info.registered_model_version)
    if alias:
        client.set_registered_model_alias(platform.model_name, platform.alias, str(version))
    return version


def _logger(
    log_model: Callable[..., Any],
    model: Any,
    example: pd.DataFrame,
    requirement: str,
    **options: Any,
) -> Callable[[str], Any]:
    """Log ``model`` with a signature inferred from ``example`` under a given registered name."""
    return lambda name: log_model(
        model,
        name="model",
        signature=infer_signature(example),
        registered_model_name=name,
        pip_requirements=[requirement],
        **options,
    )


def log_sklearn(
    model: Any, example: pd.DataFrame, trusted: tuple[str, ...] = ()
) -> Callable[[str], Any]:
    """Log in MLflow 3's default format (skops), which lists the types it may load."""
    trusted_types = ["numpy.dtype", *trusted]
    return _logger(
        mlflow_sklearn.log_model, model, example, "scikit-learn", skops_trusted_types=trusted_types
    )


def log_lightgbm(model: Any, example: pd.DataFrame) -> Callable[[str], Any]:
    return _logger(mlflow_lightgbm.log_model, model, example, "lightgbm")


def log_xgboost(model: Any, example: pd.DataFrame) -> Callable[[str], Any]:
    return _logger(mlflow_xgboost.log_model, model, example, "xgboost")


def log_pyfunc(model: PythonModel, example: pd.DataFrame) -> Callable[[str], Any]:
    return lambda name: mlflow.pyfunc.log_model(  # type: ignore[attr-defined]
        name="model",
        python_model=model,
        signature=infer_signature(example),
        registered_model_name=name,
        pip_requirements=["numpy", "pandas"],
    )


def lightgbm_booster(frame: pd.DataFrame, target: np.ndarray, objective: str) -> lgb.Booster:
    params: dict[str, Any] = {"objective": objective, "verbose": -1, "num_threads": 1}
    if objective == "multiclass":
        params["num_class"] = int(target.max()) + 1
    data = lgb.Dataset(frame[NUMBERS].to_numpy(np.float64), target, feature_name=NUMBERS)
    return lgb.train(params, data, num_boost_round=15)


def xgboost_classifier(frame: pd.DataFrame, target: np.ndarray) -> xgboost.XGBClassifier:
    model = xgboost.XGBClassifier(n_estimators=20, max_depth=4, n_jobs=1)
    return model.fit(frame[NUMBERS].to_numpy(np.float64), target)


class NanOnLargeBatches(PythonModel):
    """Passes a small smoke sample, then scores NaN for every row of a large batch."""

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> Any:
        value = np.nan if len(model_input) > 2000 else 0.5
        return np.full(len(model_input), value)


class IntegerLabels(PythonModel):
    """Returns classes 0/1 as integers: labels, never probabilities."""

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> Any:
        return (model_input["credit_score"] < 600).astype(np.int64).to_numpy()
