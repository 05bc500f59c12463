"""The benchmark's shared inputs: one day of the credit_risk deployment's validated features
and the registered models.

Everything lives under one work directory, laid out like the platform's lake, so the
``dagster`` way can materialize the deployment's real assets against it. The deployment is the
package's ``credit_risk`` (its key, partitioning, output kind and numeric contract); for the
``skpipe`` model its contract also declares the demo source's four string columns, which that
model reads, and the validated partition holds them for every model.
"""

from __future__ import annotations

import datetime as dt
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import mlflow
import mlflow.lightgbm as mlflow_lightgbm
import mlflow.sklearn as mlflow_sklearn
import numpy as np
import pandas as pd
import pyarrow as pa
import yaml
from deltalake import write_deltalake
from mlflow.models import infer_signature
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from batch_inference_platform.lib.deployments.folder import DEFAULT_FOLDER
from batch_inference_platform.lib.deployments.partitioning import Partitioning
from batch_inference_platform.lib.deployments.spec import Deployment, DeploymentSpec
from batch_inference_platform.lib.features.contract import Contract
from batch_inference_platform.lib.features.synthetic import (
    CATEGORICAL_COLUMNS,
    LABEL_COLUMN,
    generate_partition,
    raw_schema,
)
from batch_inference_platform.lib.features.synthetic import CREDIT_FEATURES as MODEL_FEATURES
from batch_inference_platform.lib.lake.layout import DeploymentTables, LakeLayout
from batch_inference_platform.lib.lake.tables import (
    count_partition,
    replace_partition,
    table_schema,
)
from batch_inference_platform.lib.quality.rules import canonical_schema, to_canonical
from batch_inference_platform.lib.registry.client import ModelNotFoundError, ModelRegistry
from batch_inference_platform.lib.registry.training import ensure_experiment
from batch_inference_platform.lib.scoring.inputs import feature_matrix

REPO = Path(__file__).resolve().parents[1]
DEPLOYMENT = "credit_risk"
"""The package's deployment the benchmark scores (``defs/deployments/credit_risk``)."""
DAY = dt.date(2026, 11, 2)
KEY = DAY.isoformat()
"""The benchmark partition's key (credit_risk is partitioned by day)."""
MODELS = {"lgbm": "bench_lgbm", "hgb": "bench_hgb", "skpipe": "bench_skpipe"}
"""Benchmark model kind -> registered model name. ``skpipe`` is the generic case: a
scikit-learn pipeline over numeric and string columns, served by its signature (a DataFrame)."""
STRING_MODELS = ("skpipe",)
"""The models that read the string columns too (a contract declares only model inputs)."""
ALIAS = "champion"
TRAINING_ROWS = 200_000
PIPELINE_TRAINING_ROWS = 50_000
"""The bounded sample of validated rows (with their label) the pipeline is trained on."""
STRING_FEATURES: tuple[str, ...] = tuple(c.name for c in CATEGORICAL_COLUMNS)
PIPELINE_FEATURES: tuple[str, ...] = (*MODEL_FEATURES, *STRING_FEATURES)
"""The pipeline's inputs, in the validated table's order (its signature's order)."""


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

    def deployment(self, model: str = "lgbm") -> Deployment:
        """The benchmark's credit_risk deployment serving ``model`` (see ``attributes``)."""
        return DeploymentSpec.model_validate(self.attributes(model)).resolve(REPO)

    def attributes(self, model: str, way: str = "dagster") -> dict[str, Any]:
        """The package's credit_risk ``defs.yaml`` attributes, changed for the benchmark: the
        model is MODELS[model]; the contract also declares the demo's string columns when the
        model reads them (STRING_MODELS); the predictions go to ``output(way, model)``;
        no schedule, and no demo generator: the validated partition is prepared here. The
        ``launched`` way validates it again as its source (into a lake of its own); the
        ``dagster`` way does not validate (it materializes the model and the predictions), so
        its source is a table holding only the validated schema (``schema_source``): a
        deployment may not read the table it writes."""
        document = yaml.safe_load((DEFAULT_FOLDER / DEPLOYMENT / "defs.yaml").read_text())
        attributes: dict[str, Any] = document["attributes"]
        strings = [
            {"name": c.name, "type": c.kind.value, "categories": list(c.categories)}
            for c in CATEGORICAL_COLUMNS
        ]
        if model in STRING_MODELS:
            declared = attributes["contract"]["columns"]
            attributes["contract"]["columns"] = [
                *declared,
                *(c for c in strings if c["name"] not in {d["name"] for d in declared}),
            ]
        attributes["source"]["table"] = (
            f"{self.layout.root}/validated/{DEPLOYMENT}"
            if way == "launched"
            else str(self.schema_source)
        )
        attributes["source"].pop("generator", None)
        attributes["model"] = {"name": MODELS[model], "alias": ALIAS}
        attributes["output"]["table"] = str(self.output(way, model))
        attributes.pop("schedule", None)
        return attributes

    def write_deployments(self, model: str, way: str = "dagster") -> Path:
        """A deployments folder holding only the benchmark's credit_risk for ``model`` (what
        the ``dagster`` and ``launched`` ways load as ``batch-inference.deployments-dir``)."""
        document = yaml.safe_load((DEFAULT_FOLDER / DEPLOYMENT / "defs.yaml").read_text())
        document["attributes"] = self.attributes(model, way)
        if way == "dagster" and not self.schema_source.exists():
            validated = table_schema(self.tables.validated)
            write_deltalake(
                str(self.schema_source),
                validated.empty_table(),
                partition_by=[self.partitioning.column or "event_date"],
            )
        folder = self.root / "deployments" / model
        if way != "dagster":
            folder = self.root / "deployments" / way / model
        path = folder / DEPLOYMENT / "defs.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        return folder

    @property
    def schema_source(self) -> Path:
        """An empty Delta table with the validated partition's schema (the ``dagster`` way's
        source: it is read for its schema only)."""
        return self.root / "schema_source" / DEPLOYMENT

    @property
    def tables(self) -> DeploymentTables:
        """The deployment's tables under the benchmark's lake (validated: the input)."""
        return self.layout.deployment(self.deployment())

    @property
    def partitioning(self) -> Partitioning:
        return self.deployment().partitioning

    @property
    def identity(self) -> list[str]:
        """Key and partition column: what every prediction row carries."""
        return self.deployment().identity

    @property
    def contract(self) -> Contract:
        """What the validated partition holds: the deployment's contract with the string
        columns (as ``skpipe`` serves it), key types from the demo source's schema."""
        return self.deployment(STRING_MODELS[0]).contract(raw_schema())

    @property
    def partition_dir(self) -> Path:
        """The day's Parquet files inside the validated Delta table (what Spark reads)."""
        return Path(self.tables.validated.uri) / f"{self.partitioning.column}={KEY}"

    def output(self, way: str, model: str) -> Path:
        return self.root / "out" / f"{way}_{model}"


def prepare(root: Path, rows: int) -> Workspace:
    """Generate ``rows`` validated rows for DAY (reused if present) and register every model
    of ``MODELS`` (those already registered under ALIAS are kept)."""
    space = Workspace(root)
    validated, partitioning, contract = space.tables.validated, space.partitioning, space.contract
    if count_partition(validated, partitioning, KEY) != rows:
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        started = time.perf_counter()
        replace_partition(
            validated,
            partitioning,
            KEY,
            (to_canonical(b, contract) for b in generate_partition(DAY, rows, batch_rows=262_144)),
            canonical_schema(contract),
        )
        print(f"generated {rows:,} rows in {time.perf_counter() - started:.1f}s")
    ready = root / "models.ready"
    if not ready.exists():
        for stale in (root / "mlflow.db", space.artifacts, space.model_cache):
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(True)
    registry = ModelRegistry(space.tracking_uri)
    missing = [kind for kind, name in MODELS.items() if not _registered(registry, name)]
    if missing:
        _register_models(space, registry, missing)
    ready.touch()
    return space


def _registered(registry: ModelRegistry, name: str) -> bool:
    try:
        registry.by_alias(name, ALIAS)
    except ModelNotFoundError:
        return False
    return True


def _register_models(space: Workspace, registry: ModelRegistry, kinds: list[str]) -> None:
    """Train, log and register the ``kinds`` of MODELS, each newest version under ALIAS."""
    batches = generate_partition(DAY - dt.timedelta(days=1), TRAINING_ROWS)
    table = pa.Table.from_batches(list(batches)).combine_chunks()
    mlflow.set_tracking_uri(space.tracking_uri)
    experiment = ensure_experiment(registry, "benchmark", str(space.artifacts))
    for kind in kinds:
        started = time.perf_counter()
        with mlflow.start_run(experiment_id=experiment, run_name=MODELS[kind]):
            _LOGGERS[kind](table, space.contract)
        newest = registry.versions(MODELS[kind])[0]
        registry.client.set_registered_model_alias(MODELS[kind], ALIAS, str(newest.version))
        print(f"trained and registered {kind} in {time.perf_counter() - started:.1f}s")


def _numeric_training(table: pa.Table) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """The numeric features as float64, the labels, and a 100-row signature sample."""
    features = feature_matrix(table.to_batches()[0], MODEL_FEATURES)
    labels = np.asarray(table.column(LABEL_COLUMN).to_numpy(), np.int32)
    return features, labels, pd.DataFrame(features[:100], columns=pd.Index(MODEL_FEATURES))


def _log_lgbm(table: pa.Table, contract: Contract) -> None:
    features, labels, sample = _numeric_training(table)
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
    mlflow_lightgbm.log_model(
        booster,
        name="model",
        registered_model_name=MODELS["lgbm"],
        signature=infer_signature(sample, booster.predict(features[:100])),
    )


def _log_hgb(table: pa.Table, contract: Contract) -> None:
    features, labels, sample = _numeric_training(table)
    hgb = HistGradientBoostingClassifier(
        max_iter=200,
        early_stopping=False,  # pyright: ignore[reportArgumentType]
        random_state=7,
    )
    hgb.fit(features, labels)
    mlflow_sklearn.log_model(
        hgb,
        name="model",
        registered_model_name=MODELS["hgb"],
        signature=infer_signature(sample, hgb.predict_proba(features[:100])),
        pyfunc_predict_fn="predict_proba",
        # We built this model ourselves: its tree arrays are safe to load.
        skops_trusted_types=["sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"],
    )


def pipeline_frame(batch: pa.RecordBatch | pa.Table) -> pd.DataFrame:
    """The pipeline's input columns as pandas: strings as object, numerics as in the table."""
    return batch.select(list(PIPELINE_FEATURES)).to_pandas()


def _log_skpipe(table: pa.Table, contract: Contract) -> None:
    """One-hot strings + imputed, scaled numerics -> logistic regression, trained on a bounded
    sample of validated rows (the contract's columns in their stored types) with the label."""
    rows = table.slice(0, PIPELINE_TRAINING_ROWS)
    validated = pa.Table.from_batches([to_canonical(b, contract) for b in rows.to_batches()])
    frame = pipeline_frame(validated)
    labels = np.asarray(rows.column(LABEL_COLUMN).to_numpy(), np.int32)
    pipeline = Pipeline(
        [
            (
                "columns",
                ColumnTransformer(
                    [
                        ("strings", OneHotEncoder(handle_unknown="ignore"), list(STRING_FEATURES)),
                        (
                            "numbers",
                            make_pipeline(SimpleImputer(), StandardScaler()),
                            list(MODEL_FEATURES),
                        ),
                    ]
                ),
            ),
            ("model", LogisticRegression(max_iter=1000)),
        ]
    )
    pipeline.fit(frame, labels)
    with warnings.catch_warnings():
        # The generated integer columns hold no nulls: the hint about missing values is moot.
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
        signature = infer_signature(frame)
    mlflow_sklearn.log_model(
        pipeline,
        name="model",
        registered_model_name=MODELS["skpipe"],
        signature=signature,
        pyfunc_predict_fn="predict_proba",  # naive and spark_udf read probabilities, not labels
        # We built this pipeline ourselves: the encoders' category dtypes are safe to load.
        skops_trusted_types=["numpy.dtype"],
    )


_LOGGERS = {"lgbm": _log_lgbm, "hgb": _log_hgb, "skpipe": _log_skpipe}
