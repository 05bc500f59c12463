"""The benchmark's shared inputs: one day of validated features and the registered models.

Everything lives under one work directory, laid out like the platform's lake, so the
``dagster`` way can materialize the real assets against it.
"""

from __future__ import annotations

import datetime as dt
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import lightgbm as lgb
import mlflow
import mlflow.lightgbm as mlflow_lightgbm
import mlflow.sklearn as mlflow_sklearn
import numpy as np
import pandas as pd
import pyarrow as pa
from mlflow.models import infer_signature
from sklearn.ensemble import HistGradientBoostingClassifier

from batch_inference_platform.lib.features.contract import LABEL_COLUMN, MODEL_FEATURES
from batch_inference_platform.lib.features.synthetic import generate_partition
from batch_inference_platform.lib.lake.layout import LakeLayout
from batch_inference_platform.lib.lake.tables import count_partition, replace_partition
from batch_inference_platform.lib.quality.rules import canonical_schema, to_canonical
from batch_inference_platform.lib.registry.client import ModelRegistry
from batch_inference_platform.lib.registry.training import ensure_experiment
from batch_inference_platform.lib.scoring.inputs import feature_matrix

DAY = dt.date(2026, 11, 2)
MODELS = {"lgbm": "bench_lgbm", "hgb": "bench_hgb"}
"""Benchmark model kind -> registered model name."""
ALIAS = "champion"
TRAINING_ROWS = 200_000


@dataclass(frozen=True)
class Workspace:
    """Paths of one benchmark work directory."""

    root: Path

    @property
    def layout(self) -> LakeLayout:
        return LakeLayout(str(self.root / "lake"))

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.root / 'mlflow.db'}"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def model_cache(self) -> Path:
        return self.root / "model_cache"

    @property
    def partition_dir(self) -> Path:
        """The day's Parquet files inside the validated Delta table (what Spark reads)."""
        return Path(self.layout.validated.uri) / f"event_date={DAY.isoformat()}"

    def output(self, way: str, model: str) -> Path:
        return self.root / "out" / f"{way}_{model}"


def prepare(root: Path, rows: int) -> Workspace:
    """Generate ``rows`` validated rows for DAY (reused if present) and register both models."""
    space = Workspace(root)
    if count_partition(space.layout.validated, DAY) != rows:
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        started = time.perf_counter()
        replace_partition(
            space.layout.validated,
            DAY,
            (to_canonical(b) for b in generate_partition(DAY, rows, batch_rows=262_144)),
            canonical_schema(),
        )
        print(f"generated {rows:,} rows in {time.perf_counter() - started:.1f}s")
    ready = root / "models.ready"
    if not ready.exists():
        for stale in (root / "mlflow.db", space.artifacts, space.model_cache):
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(True)
        _register_models(space, ModelRegistry(space.tracking_uri))
        ready.touch()
    return space


def _register_models(space: Workspace, registry: ModelRegistry) -> None:
    batches = generate_partition(DAY - dt.timedelta(days=1), TRAINING_ROWS)
    table = pa.Table.from_batches(list(batches)).combine_chunks()
    features = feature_matrix(table.to_batches()[0], MODEL_FEATURES)
    labels = np.asarray(table.column(LABEL_COLUMN).to_numpy(), np.int32)
    sample = pd.DataFrame(features[:100], columns=pd.Index(MODEL_FEATURES))
    mlflow.set_tracking_uri(space.tracking_uri)
    experiment = ensure_experiment(registry, "benchmark", str(space.artifacts))
    started = time.perf_counter()
    booster = lgb.train(
        {
            "objective": "binary",
            "num_leaves": 63,
            "learning_rate": 0.05,
            "verbose": -1,
            "num_threads": 2,
            "seed": 7,
        },
        lgb.Dataset(features, labels, feature_name=list(MODEL_FEATURES)),
        num_boost_round=200,
    )
    hgb = HistGradientBoostingClassifier(
        max_iter=200,
        early_stopping=False,  # pyright: ignore[reportArgumentType]
        random_state=7,
    )
    hgb.fit(features, labels)
    print(f"trained both models in {time.perf_counter() - started:.1f}s")
    with mlflow.start_run(experiment_id=experiment, run_name="bench_lgbm"):
        mlflow_lightgbm.log_model(
            booster,
            name="model",
            registered_model_name=MODELS["lgbm"],
            signature=infer_signature(sample, booster.predict(features[:100])),
        )
    with mlflow.start_run(experiment_id=experiment, run_name="bench_hgb"):
        mlflow_sklearn.log_model(
            hgb,
            name="model",
            registered_model_name=MODELS["hgb"],
            signature=infer_signature(sample, hgb.predict_proba(features[:100])),
            pyfunc_predict_fn="predict_proba",
            # We built this model ourselves: its tree arrays are safe to load.
            skops_trusted_types=[
                "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"
            ],
        )
    for name in MODELS.values():
        registry.client.set_registered_model_alias(name, ALIAS, "1")
