"""Evaluation metrics per task, as plain floats (and a confusion matrix)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from sklearn import metrics as skm

from shipml.core.schema import Task

CLASSIFICATION_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss")
REGRESSION_METRICS = ("rmse", "mae", "r2")


def metric_names(task: Task) -> tuple[str, ...]:
    return REGRESSION_METRICS if task == "regression" else CLASSIFICATION_METRICS


# For these, lower is better: a gate on them is usually a `max`.
LOWER_IS_BETTER = frozenset({"log_loss", "rmse", "mae"})


@dataclass(frozen=True)
class Evaluation:
    """Holdout metrics and, for classification, the confusion matrix (rows: true, columns: predicted)."""

    metrics: dict[str, float]
    labels: tuple[str, ...] = ()
    confusion: tuple[tuple[int, ...], ...] = ()


def evaluate(
    task: Task, y_true: ArrayLike, y_pred: ArrayLike, proba: np.ndarray | None, classes: ArrayLike | None
) -> Evaluation:
    """Metrics of predictions ``y_pred`` (and ``proba`` with columns in ``classes`` order)."""
    yt = np.asarray(y_true)
    yp = np.asarray(y_pred)
    if task == "regression":
        return Evaluation(
            {
                "rmse": float(np.sqrt(skm.mean_squared_error(yt, yp))),
                "mae": float(skm.mean_absolute_error(yt, yp)),
                "r2": float(skm.r2_score(yt, yp)),
            }
        )
    assert proba is not None and classes is not None  # noqa: S101 - classifiers always give both
    labels = np.asarray(classes)
    average = "binary" if task == "binary" else "macro"
    pos = {"pos_label": labels[1]} if task == "binary" else {}
    out = {
        "accuracy": float(skm.accuracy_score(yt, yp)),
        "precision": float(skm.precision_score(yt, yp, average=average, zero_division=0, **pos)),
        "recall": float(skm.recall_score(yt, yp, average=average, zero_division=0, **pos)),
        "f1": float(skm.f1_score(yt, yp, average=average, zero_division=0, **pos)),
        "log_loss": float(skm.log_loss(yt, proba, labels=labels)),
    }
    if task == "binary":
        out["roc_auc"] = float(skm.roc_auc_score(yt == labels[1], proba[:, 1]))
    else:
        out["roc_auc"] = float(skm.roc_auc_score(yt, proba, multi_class="ovr", average="macro", labels=labels))
    cm = skm.confusion_matrix(yt, yp, labels=labels)
    return Evaluation(
        {k: out[k] for k in CLASSIFICATION_METRICS},
        tuple(str(c) for c in labels),
        tuple(tuple(int(v) for v in row) for row in cm),
    )
