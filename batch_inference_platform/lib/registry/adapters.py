"""What a loaded model natively predicts, and binding that to a declared output kind.

Each flavor is asked the same two questions - is it a binary classifier, a multi-class
classifier or a regressor (and with which classes), and how does it predict class probabilities,
labels or values - so a model whose output does not fit the declared kind is refused with both
named ("3 classes; this use case expects the probability of class 1"), never served wrongly.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from batch_inference_platform.lib.scoring.inputs import ModelInput
from batch_inference_platform.lib.scoring.outputs import OutputKind, OutputSpec, class_column

# A model fit on named columns and fed them as a matrix in the same order (the loader orders
# the matrix by the model's feature names) warns on every predict call; the warning says
# nothing the loader has not checked.
warnings.filterwarnings("ignore", message="X does not have valid feature names")

Task = Literal["binary", "multiclass", "regression", "score", "labels", "unknown"]
"""``score``: one number per row of unknown meaning; ``labels``: one class per row."""
Predict = Callable[[ModelInput], Any]


class OutputMismatchError(ValueError):
    """The model's output does not fit the use case's declared output kind."""


class PredictFailedError(RuntimeError):
    """The model raised while predicting a sample to show its output's shape."""


@dataclass(frozen=True)
class ModelShape:
    """What a model produces: its task, its classes, and how to ask it for each output."""

    task: Task
    detail: str
    """How the task was recognised, e.g. 'objective multiclass' or 'LGBMRegressor'."""
    classes: tuple[str, ...] = ()
    probabilities: Predict | None = None
    """(rows, classes) probabilities in ``classes`` order (classifiers)."""
    predict: Predict | None = None
    """Labels (classifiers) or values (regressors), one per row."""


def model_shape(flavor: str, model: Any) -> ModelShape:
    """Recognise a model loaded through MLflow's ``flavor`` loader."""
    if flavor == "lightgbm" and not hasattr(model, "predict_proba") and not _is_sklearn(model):
        return _lightgbm_booster(model)
    if flavor == "xgboost" and not _is_sklearn(model):
        return _xgboost_booster(model)
    if flavor in ("sklearn", "lightgbm", "xgboost"):
        return _sklearn(model)
    return _pyfunc(model)


def bind_output(
    shape: ModelShape, kind: OutputKind, positive_class: str, sample: Callable[[], ModelInput]
) -> tuple[OutputSpec, Predict]:
    """The output spec and predict function that serve ``kind`` from a model of ``shape``.

    ``sample()`` is scored once when the model's shape can only be seen from its output (pyfunc).
    Raises ``OutputMismatchError`` naming what the model gives and what the use case expects.
    """
    if shape.task == "unknown":
        shape = _observed(shape, sample())
    expected = OutputSpec(kind, positive_class)
    probabilities, predict = shape.probabilities, shape.predict
    if kind is OutputKind.VALUE and shape.task in ("regression", "score") and predict:
        return expected, _as_float(predict)
    if kind is OutputKind.PROBABILITY and shape.task == "score" and predict:
        return expected, _as_float(predict)  # one number per row; the smoke test checks [0, 1]
    if kind is OutputKind.LABEL and shape.task in ("binary", "multiclass", "labels"):
        if predict is not None:
            return expected, predict
        if probabilities is not None:
            classes = np.asarray(shape.classes, dtype=object)
            return expected, lambda rows: classes[np.argmax(probabilities(rows), axis=1)]
    if kind is OutputKind.CLASS_PROBABILITIES and probabilities is not None:
        columns = [class_column(c) for c in shape.classes]
        if len(set(columns)) != len(columns):
            raise OutputMismatchError(
                f"the model's classes {list(shape.classes)} give clashing column names {columns}"
            )
        return OutputSpec(kind, positive_class, shape.classes), probabilities
    if kind is OutputKind.PROBABILITY and probabilities is not None and len(shape.classes) == 2:
        if positive_class not in shape.classes:
            raise OutputMismatchError(
                f"the model's classes are {list(shape.classes)}; this use case expects the "
                f"probability of class {positive_class}"
            )
        column = shape.classes.index(positive_class)
        return expected, lambda rows: probabilities(rows)[:, column]
    raise OutputMismatchError(f"{_what(shape)}; this use case expects {expected.describe()}")


def _what(shape: ModelShape) -> str:
    if shape.task == "regression":
        return f"a regression model ({shape.detail})"
    if shape.task in ("score", "labels", "unknown"):
        return f"a model {shape.detail}"
    return f"{len(shape.classes)} classes {list(shape.classes)} ({shape.detail})"


def _lightgbm_booster(booster: Any) -> ModelShape:
    header = booster.model_to_string(num_iteration=1)
    objective = next(
        (line.split("=", 1)[1] for line in header.splitlines() if line.startswith("objective=")),
        "regression",
    )
    name = objective.split()[0]
    detail = f"LightGBM objective {objective}"
    if name == "binary":
        return ModelShape("binary", detail, ("0", "1"), _two_columns(booster.predict))
    if name in ("multiclass", "multiclassova"):
        classes = tuple(str(c) for c in range(booster.num_model_per_iteration()))
        return ModelShape("multiclass", detail, classes, booster.predict)
    return ModelShape("regression", detail, predict=booster.predict)


def _xgboost_booster(booster: Any) -> ModelShape:
    import xgboost

    config = json.loads(booster.save_config())["learner"]
    objective = config["objective"]["name"]
    detail = f"XGBoost objective {objective}"
    names = booster.feature_names

    def matrix(rows: ModelInput) -> Any:
        return xgboost.DMatrix(rows, feature_names=names)

    if objective == "binary:logistic":
        return ModelShape(
            "binary", detail, ("0", "1"), _two_columns(lambda rows: booster.predict(matrix(rows)))
        )
    if objective == "multi:softprob":
        count = int(config["learner_model_param"]["num_class"])
        classes = tuple(str(c) for c in range(count))
        return ModelShape("multiclass", detail, classes, lambda r: booster.predict(matrix(r)))
    if objective == "binary:logitraw":
        return ModelShape(
            "score", f"{detail} (raw margins)", predict=lambda r: booster.predict(matrix(r))
        )
    if objective in ("binary:hinge", "multi:softmax"):
        # Class indices, returned as floats: labels "0", "1"... like every other classifier.
        return ModelShape(
            "labels", detail, predict=lambda r: booster.predict(matrix(r)).astype(np.int64)
        )
    if objective.startswith(("binary:", "multi:", "rank:")):
        return ModelShape("unknown", detail, predict=lambda r: booster.predict(matrix(r)))
    return ModelShape("regression", detail, predict=lambda rows: booster.predict(matrix(rows)))


def _sklearn(model: Any) -> ModelShape:
    """scikit-learn estimators and pipelines, and the scikit-learn APIs of LightGBM/XGBoost."""
    name = type(model).__name__
    predict = model.predict
    classes = getattr(model, "classes_", None)
    if classes is None:
        return ModelShape("regression", name, predict=predict)
    labels = tuple(str(c) for c in np.asarray(classes).tolist())
    task: Task = "binary" if len(labels) == 2 else "multiclass"
    if not hasattr(model, "predict_proba"):
        return ModelShape(task, f"{name} without predict_proba", labels, None, predict)
    return ModelShape(task, name, labels, model.predict_proba, predict)


def _pyfunc(model: Any) -> ModelShape:
    return ModelShape("unknown", "pyfunc", predict=model.predict)


def _observed(shape: ModelShape, sample: ModelInput) -> ModelShape:
    """A pyfunc's shape as seen in its output on ``sample``: one column is a score (or label),
    several columns are class probabilities named by the DataFrame's columns."""
    assert shape.predict is not None
    predict = shape.predict
    try:
        output = predict(sample)
    except Exception as error:  # the model's own failure, reported as such
        raise PredictFailedError(f"{type(error).__name__}: {error}") from error
    if isinstance(output, pd.DataFrame) and output.shape[1] > 1:
        classes = tuple(str(c) for c in output.columns)
        return ModelShape(
            "binary" if len(classes) == 2 else "multiclass",
            f"{shape.detail} returning columns {list(classes)}",
            classes,
            lambda rows: np.asarray(predict(rows), np.float64),
        )
    values = np.asarray(output)
    if values.ndim == 2 and values.shape[1] > 1:
        classes = tuple(str(c) for c in range(values.shape[1]))
        return ModelShape(
            "binary" if len(classes) == 2 else "multiclass",
            f"{shape.detail} returning {values.shape[1]} columns",
            classes,
            lambda rows: np.asarray(predict(rows), np.float64),
        )

    def single(rows: ModelInput) -> np.ndarray:
        result = predict(rows)
        result = result.to_numpy() if hasattr(result, "to_numpy") else np.asarray(result)
        return result.reshape(len(result), -1)[:, 0] if result.ndim == 2 else result

    kind = np.asarray(single(sample)).dtype
    if np.issubdtype(kind, np.floating):
        # A value, or the probability of the positive class: the declared kind says which.
        return ModelShape(
            "score", f"({shape.detail}) returning one number per row", (), None, single
        )
    # Integers, booleans and strings are classes, never probabilities.
    return ModelShape("labels", f"({shape.detail}) returning labels", (), None, single)


def _two_columns(positive: Predict) -> Predict:
    """(rows, 2) probabilities from a binary model that returns P(class 1) only."""

    def predict(rows: ModelInput) -> np.ndarray:
        p = np.asarray(positive(rows), np.float64)
        return np.column_stack([1.0 - p, p])

    return predict


def _as_float(predict: Predict) -> Predict:
    return lambda rows: np.asarray(predict(rows), np.float64)


def _is_sklearn(model: Any) -> bool:
    return hasattr(model, "get_params") and hasattr(model, "fit")
