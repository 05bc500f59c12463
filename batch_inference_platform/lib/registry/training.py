"""Train a demo model and register it, so a fresh machine has a champion to serve.

Each demo source (``lib.features.generators``) trains its own model: credit risk a LightGBM
binary booster on its 30 numeric features, churn a scikit-learn pipeline (one-hot plans and
regions, imputed numerics, a gradient-boosted multi-class classifier) on named, typed columns.
Training is idempotent: a version trained on the same rows (by content) with the same
parameters is reused - found by its ``training_fingerprint`` tag - rather than registered again.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import lightgbm as lgb
import mlflow
import mlflow.lightgbm as mlflow_lightgbm
import mlflow.models
import mlflow.pyfunc
import mlflow.sklearn as mlflow_sklearn
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import sklearn
from mlflow.models import infer_signature
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder
from threadpoolctl import threadpool_limits

from batch_inference_platform.lib.features import churn, synthetic
from batch_inference_platform.lib.registry.client import ModelRegistry, ModelVersionInfo, pointed_at
from batch_inference_platform.lib.scoring.inputs import feature_matrix

if TYPE_CHECKING:
    from batch_inference_platform.lib.features.generators import DemoSource

FINGERPRINT_TAG = "training_fingerprint"


@dataclass(frozen=True)
class TrainingParams:
    """Boosting settings for a demo model (the benchmark's shape by default): LightGBM's for
    credit risk; for churn, iterations and leaves (capped: ``churn_params``), learning rate."""

    num_boost_round: int = 200
    num_leaves: int = 63
    learning_rate: float = 0.05
    seed: int = 7


def train_and_register(
    registry: ModelRegistry,
    *,
    model_name: str,
    alias: str,
    experiment: str,
    artifact_root: str,
    training_data: pa.Table,
    data_version: str,
    params: TrainingParams,
    source: DemoSource | None = None,
) -> tuple[ModelVersionInfo, bool]:
    """Train ``source``'s demo model (default: credit risk) on ``training_data`` - rows the
    source generated, label included - and give the registered version ``alias``.

    Returns the version and whether it was newly trained (False: an identical one existed).
    """
    if source is None:
        from batch_inference_platform.lib.features.generators import GENERATORS

        source = GENERATORS["credit_risk"]
    return source.train(
        registry,
        model_name=model_name,
        alias=alias,
        experiment=experiment,
        artifact_root=artifact_root,
        training_data=training_data,
        data_version=data_version,
        params=params,
    )


def train_credit_risk(
    registry: ModelRegistry,
    *,
    model_name: str,
    alias: str,
    experiment: str,
    artifact_root: str,
    training_data: pa.Table,
    data_version: str,
    params: TrainingParams,
) -> tuple[ModelVersionInfo, bool]:
    """The LightGBM binary credit-risk model on ``synthetic.CREDIT_FEATURES`` (float64)."""
    fingerprint = _fingerprint(training_data, params)
    existing = _reuse(registry, model_name, alias, fingerprint)
    if existing is not None:
        return existing, False

    names = synthetic.CREDIT_FEATURES
    features = feature_matrix(training_data.combine_chunks().to_batches()[0], names)
    labels = np.asarray(training_data.column(synthetic.LABEL_COLUMN).to_numpy(), np.int32)
    holdout = np.arange(len(labels)) % 5 == 0
    booster = lgb.train(
        {
            "objective": "binary",
            "num_leaves": params.num_leaves,
            "learning_rate": params.learning_rate,
            "seed": params.seed,
            "verbose": -1,
            "num_threads": 2,
            "deterministic": True,
        },
        lgb.Dataset(features[~holdout], labels[~holdout], feature_name=list(names)),
        num_boost_round=params.num_boost_round,
    )
    scores = booster.predict(features[holdout])
    metrics = {
        "holdout_auc": float(roc_auc_score(labels[holdout], scores)),
        "holdout_log_loss": float(log_loss(labels[holdout], scores)),
        "training_rows": float((~holdout).sum()),
    }
    sample = pd.DataFrame(features[:100], columns=pd.Index(names))
    signature = infer_signature(sample, booster.predict(features[:100]))

    def log() -> None:
        mlflow_lightgbm.log_model(
            booster,
            name="model",
            signature=signature,
            registered_model_name=model_name,
            # Declared, not inferred: inference starts a subprocess and takes seconds.
            pip_requirements=[f"lightgbm=={lgb.__version__}", f"numpy=={np.__version__}"],
        )

    run = _Run(model_name, alias, experiment, artifact_root, fingerprint)
    return run.log(registry, {**asdict(params), "data_version": data_version}, metrics, log), True


CHURN_STRINGS: tuple[str, ...] = ("plan", "region")
CHURN_INTEGERS: tuple[str, ...] = ("tenure_months", "support_tickets_90d")
CHURN_FLOATS: tuple[str, ...] = ("monthly_charges", "last_login_days")


def churn_frame(rows: pa.Table | pa.RecordBatch) -> pd.DataFrame:
    """The churn model's inputs as the typed DataFrame it is fit on and scores: strings as
    strings, integers as int64, floats as float64 (nulls NaN)."""
    frame = {}
    for name in churn.CHURN_FEATURES:
        values = rows.column(name)
        if name in CHURN_STRINGS:
            frame[name] = pd.Series(values.to_pylist(), dtype=object)
        elif name in CHURN_INTEGERS:
            frame[name] = pc.cast(values, pa.int64()).to_numpy()
        else:
            frame[name] = pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False)
    return pd.DataFrame(frame)


CHURN_MAX_ITERATIONS = 100
CHURN_MAX_LEAVES = 15
"""The churn model stays small whatever the credit-sized defaults ask for: on six features it
fits as well (holdout log loss 0.545 against 0.558 at 200 x 63) in a quarter of the time."""


def churn_params(params: TrainingParams) -> TrainingParams:
    """The settings the churn pipeline is trained with: ``params`` within the churn caps."""
    return replace(
        params,
        num_boost_round=min(params.num_boost_round, CHURN_MAX_ITERATIONS),
        num_leaves=min(params.num_leaves, CHURN_MAX_LEAVES),
    )


def churn_pipeline(params: TrainingParams) -> Pipeline:
    """One-hot plan and region (unknown categories ignored), numerics median-imputed and passed
    through, a small gradient-boosted multi-class classifier."""
    columns = ColumnTransformer(
        [
            (
                "strings",
                # Explicit categories: a retired plan in the training rows is no feature, and
                # unknown (or null) strings score as all-zero, never fail.
                OneHotEncoder(
                    categories=[list(churn.PLANS), list(churn.REGIONS)],  # pyright: ignore[reportArgumentType]
                    handle_unknown="ignore",
                    sparse_output=False,
                ),
                list(CHURN_STRINGS),
            ),
            (
                "numbers",
                SimpleImputer(strategy="median"),
                [*CHURN_INTEGERS, *CHURN_FLOATS],
            ),
        ]
    )
    model = HistGradientBoostingClassifier(
        max_iter=params.num_boost_round,
        max_leaf_nodes=params.num_leaves,
        learning_rate=params.learning_rate,
        early_stopping=False,  # pyright: ignore[reportArgumentType]
        random_state=params.seed,
    )
    return Pipeline([("columns", columns), ("model", model)])


def train_churn(
    registry: ModelRegistry,
    *,
    model_name: str,
    alias: str,
    experiment: str,
    artifact_root: str,
    training_data: pa.Table,
    data_version: str,
    params: TrainingParams,
) -> tuple[ModelVersionInfo, bool]:
    """The scikit-learn churn pipeline on ``churn.CHURN_FEATURES``, predicting the
    probabilities of ``churn.CLASSES`` (output kind ``class_probabilities``); ``params`` are
    capped by ``churn_params`` (what is logged and fingerprinted is what was trained)."""
    params = churn_params(params)
    fingerprint = _fingerprint(training_data, params, salt="churn")
    existing = _reuse(registry, model_name, alias, fingerprint)
    if existing is not None:
        return existing, False

    labelled = training_data.filter(pc.is_valid(training_data.column(churn.LABEL_COLUMN)))
    frame = churn_frame(labelled)
    labels = np.asarray(labelled.column(churn.LABEL_COLUMN).to_pylist(), dtype=object)
    holdout = np.arange(len(labels)) % 5 == 0
    # One OpenMP thread: on a busy machine (Dagster runs side by side) OpenMP's spinning
    # threads slow scikit-learn's gradient boosting ten-fold; one thread fits 40k rows in 1-3 s.
    with threadpool_limits(limits=1, user_api="openmp"):
        pipeline = churn_pipeline(params).fit(frame[~holdout], labels[~holdout])
        truth, probabilities = labels[holdout], pipeline.predict_proba(frame[holdout])
    classes = pipeline.classes_
    metrics = {
        "holdout_log_loss": float(log_loss(truth, probabilities, labels=classes)),
        "holdout_accuracy": float(accuracy_score(truth, classes[probabilities.argmax(axis=1)])),
        "holdout_macro_auc": float(
            roc_auc_score(truth, probabilities, multi_class="ovr", labels=classes)
        ),
        "training_rows": float((~holdout).sum()),
    }
    with warnings.catch_warnings():
        # MLflow hints that integer columns cannot hold nulls: the churn integers are required.
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
        # Inferred on every row, so the columns that have nulls are declared optional.
        signature = infer_signature(frame)
    import skops  # here, not at import: ~3 s that every run worker would pay
    import skops.io

    # skops loads only the types it is told to trust: those of the pipeline just fit.
    trusted = skops.io.get_untrusted_types(data=skops.io.dumps(pipeline))

    def log() -> None:
        mlflow_sklearn.log_model(
            pipeline,
            name="model",
            signature=signature,
            registered_model_name=model_name,
            serialization_format=mlflow_sklearn.SERIALIZATION_FORMAT_SKOPS,
            skops_trusted_types=trusted,
            pip_requirements=[
                f"scikit-learn=={sklearn.__version__}",
                f"skops=={skops.__version__}",
                f"numpy=={np.__version__}",
                f"pandas=={pd.__version__}",
            ],
        )

    run = _Run(model_name, alias, experiment, artifact_root, fingerprint)
    return run.log(registry, {**asdict(params), "data_version": data_version}, metrics, log), True


def _reuse(
    registry: ModelRegistry, model_name: str, alias: str, fingerprint: str
) -> ModelVersionInfo | None:
    """The version already trained with ``fingerprint``, given ``alias`` (None: none is)."""
    for existing in registry.versions(model_name):
        if existing.tags.get(FINGERPRINT_TAG) == fingerprint:
            registry.client.set_registered_model_alias(model_name, alias, str(existing.version))
            return existing
    return None


@dataclass(frozen=True)
class _Run:
    """Where a freshly trained model is logged, registered, tagged and aliased."""

    model_name: str
    alias: str
    experiment: str
    artifact_root: str
    fingerprint: str

    def log(
        self,
        registry: ModelRegistry,
        params: dict[str, object],
        metrics: dict[str, float],
        log_model: Callable[[], None],
    ) -> ModelVersionInfo:
        name = self.model_name
        with pointed_at(registry):
            experiment_id = ensure_experiment(registry, self.experiment, self.artifact_root)
            with mlflow.start_run(experiment_id=experiment_id, run_name=f"train-{name}"):
                mlflow.log_params(params)
                mlflow.log_metrics(metrics)
                log_model()
        version = registry.versions(name)[0]
        registry.client.set_model_version_tag(
            name, str(version.version), FINGERPRINT_TAG, self.fingerprint
        )
        registry.client.set_registered_model_alias(name, self.alias, str(version.version))
        return registry.versions(name)[0]


def ensure_experiment(registry: ModelRegistry, name: str, artifact_root: str) -> str:
    found = registry.client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = artifact_root
    if "://" not in location:
        Path(location).mkdir(parents=True, exist_ok=True)
        location = Path(location).resolve().as_uri()
    return registry.client.create_experiment(name, artifact_location=location)


def _fingerprint(training_data: pa.Table, params: TrainingParams, salt: str = "") -> str:
    """Hash of the training rows' content and the parameters (not of where they were read);
    ``salt`` tells demo models apart (credit risk's has none, as before demo sources)."""
    digest = hashlib.sha256(json.dumps(asdict(params), sort_keys=True).encode())
    if salt:
        digest.update(salt.encode())
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, training_data.schema) as writer:
        writer.write_table(training_data)
    digest.update(sink.getvalue())
    return digest.hexdigest()[:16]
