"""Train the demo credit-risk model and register it, so a fresh machine has a champion to serve.

Training is idempotent: a version trained on the same rows (by content) with the same
parameters is reused - found by its ``training_fingerprint`` tag - rather than registered again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import lightgbm as lgb
import mlflow
import mlflow.lightgbm as mlflow_lightgbm
import mlflow.models
import mlflow.pyfunc
import numpy as np
import pandas as pd
import pyarrow as pa
from mlflow.models import infer_signature
from sklearn.metrics import log_loss, roc_auc_score

from batch_inference_platform.lib.features.contract import LABEL_COLUMN, MODEL_FEATURES
from batch_inference_platform.lib.registry.client import ModelRegistry, ModelVersionInfo, pointed_at
from batch_inference_platform.lib.scoring.inputs import feature_matrix

FINGERPRINT_TAG = "training_fingerprint"


@dataclass(frozen=True)
class TrainingParams:
    """LightGBM settings for the demo model (the benchmark's shape by default)."""

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
) -> tuple[ModelVersionInfo, bool]:
    """Train on ``training_data`` and give the registered version ``alias``.

    Returns the version and whether it was newly trained (False: an identical one existed).
    """
    fingerprint = _fingerprint(training_data, params)
    for existing in registry.versions(model_name):
        if existing.tags.get(FINGERPRINT_TAG) == fingerprint:
            registry.client.set_registered_model_alias(model_name, alias, str(existing.version))
            return existing, False

    features = feature_matrix(training_data.combine_chunks().to_batches()[0], MODEL_FEATURES)
    labels = np.asarray(training_data.column(LABEL_COLUMN).to_numpy(), np.int32)
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
        lgb.Dataset(features[~holdout], labels[~holdout], feature_name=list(MODEL_FEATURES)),
        num_boost_round=params.num_boost_round,
    )
    scores = booster.predict(features[holdout])
    metrics = {
        "holdout_auc": float(roc_auc_score(labels[holdout], scores)),
        "holdout_log_loss": float(log_loss(labels[holdout], scores)),
        "training_rows": float((~holdout).sum()),
    }
    sample = pd.DataFrame(features[:100], columns=pd.Index(MODEL_FEATURES))
    signature = infer_signature(sample, booster.predict(features[:100]))

    with pointed_at(registry):
        experiment_id = ensure_experiment(registry, experiment, artifact_root)
        with mlflow.start_run(experiment_id=experiment_id, run_name=f"train-{model_name}"):
            mlflow.log_params({**asdict(params), "data_version": data_version})
            mlflow.log_metrics(metrics)
            mlflow_lightgbm.log_model(
                booster,
                name="model",
                signature=signature,
                registered_model_name=model_name,
                # Declared, not inferred: inference starts a subprocess and takes seconds.
                pip_requirements=[f"lightgbm=={lgb.__version__}", f"numpy=={np.__version__}"],
            )
    version = registry.versions(model_name)[0]
    registry.client.set_model_version_tag(
        model_name, str(version.version), FINGERPRINT_TAG, fingerprint
    )
    registry.client.set_registered_model_alias(model_name, alias, str(version.version))
    return registry.versions(model_name)[0], True


def ensure_experiment(registry: ModelRegistry, name: str, artifact_root: str) -> str:
    found = registry.client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = artifact_root
    if "://" not in location:
        Path(location).mkdir(parents=True, exist_ok=True)
        location = Path(location).resolve().as_uri()
    return registry.client.create_experiment(name, artifact_location=location)


def _fingerprint(training_data: pa.Table, params: TrainingParams) -> str:
    """Hash of the training rows' content and the parameters (not of where they were read)."""
    digest = hashlib.sha256(json.dumps(asdict(params), sort_keys=True).encode())
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, training_data.schema) as writer:
        writer.write_table(training_data)
    digest.update(sink.getvalue())
    return digest.hexdigest()[:16]
