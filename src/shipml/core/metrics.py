"""Evaluation metrics per task, as plain floats (and a confusion matrix)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from shipml.core.calibration import Recalibration, calibration_error, fit_recalibration
from shipml.core.performance import PerformanceEstimate, realised_performance
from shipml.core.schema import Task
from shipml.errors import ConfigError

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
    positive: str | None = None  # binary: the class precision, recall and f1 measure
    # classification: see core.performance.calibration_error; kept out of ``metrics`` so that the metric
    # names gates accept (metric_names) stay as they are, and recorded with them (``recorded``)
    calibration_error: float | None = None
    # the holdout's own interval of each metric the monitor judges (core.performance, 95 %), and its rows: a
    # window is compared with the holdout as with another estimate, not an exact value (performance_drop)
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    rows: int = 0
    # classification: the logistic map of the scores fitted on the holdout, which estimated performance applies
    # before reading metrics from them (core.calibration); None when the holdout has too few of an outcome
    recalibration: Recalibration | None = None

    def recorded(self) -> dict[str, float]:
        """What a training run logs as its holdout metrics: ``metrics`` plus the calibration error."""
        extra = {} if self.calibration_error is None else {"calibration_error": self.calibration_error}
        return {**self.metrics, **extra}


# Labels taken as the positive class of a binary task when present (compared case-insensitively as text).
_POSITIVE_NAMES = ("1", "true", "yes")


def positive_class(labels: Sequence[Any] | np.ndarray, y: ArrayLike, configured: str | None = None) -> Any:
    """The label binary precision, recall and f1 measure: ``configured`` (``training.positive_class``), else
    the label reading 1, true or yes, else the rarer label in ``y`` (the one a model is usually asked to find;
    on a tie, the second sorted label)."""
    if configured is not None:
        for label in labels:
            if str(label) == configured:
                return label
        known = ", ".join(repr(str(label)) for label in labels)
        raise ConfigError([f"training.positive_class: must be one of the target's labels {known}, got {configured!r}"])
    named = [label for label in labels if str(label).lower() in _POSITIVE_NAMES]
    if len(named) == 1:
        return named[0]
    values = np.asarray(y)
    counts = [int(np.sum(values == label)) for label in labels]
    return labels[1] if counts[0] == counts[1] else labels[int(np.argmin(counts))]


def evaluate(
    task: Task,
    y_true: ArrayLike,
    y_pred: ArrayLike,
    proba: np.ndarray | None,
    classes: ArrayLike | None,
    positive: Any = None,
) -> Evaluation:
    """Metrics of predictions ``y_pred`` (and ``proba`` with columns in ``classes`` order).

    ``positive``: the positive class of a binary task (see ``positive_class``); None: the second label.
    """
    from sklearn import metrics as skm  # here: reading LOWER_IS_BETTER or the names must not load scikit-learn

    yt = np.asarray(y_true)
    yp = np.asarray(y_pred)
    if task == "regression":
        return Evaluation(
            {
                "rmse": float(np.sqrt(skm.mean_squared_error(yt, yp))),
                "mae": float(skm.mean_absolute_error(yt, yp)),
                "r2": float(skm.r2_score(yt, yp)),
            },
            intervals=_intervals(realised_performance(task, yt, yp)),
            rows=len(yt),
        )
    assert proba is not None and classes is not None  # noqa: S101 - classifiers always give both
    labels = np.asarray(classes)
    average = "binary" if task == "binary" else "macro"
    if positive is None and task == "binary":
        positive = labels[1]
    pos = {"pos_label": positive} if task == "binary" else {}
    out = {
        "accuracy": float(skm.accuracy_score(yt, yp)),
        "precision": float(skm.precision_score(yt, yp, average=average, zero_division=0, **pos)),
        "recall": float(skm.recall_score(yt, yp, average=average, zero_division=0, **pos)),
        "f1": float(skm.f1_score(yt, yp, average=average, zero_division=0, **pos)),
        "log_loss": float(skm.log_loss(yt, proba, labels=labels)),
    }
    if task == "binary":
        column = int(np.flatnonzero(labels == positive)[0])
        out["roc_auc"] = float(skm.roc_auc_score(yt == positive, proba[:, column]))
    else:
        out["roc_auc"] = float(skm.roc_auc_score(yt, proba, multi_class="ovr", average="macro", labels=labels))
    cm = skm.confusion_matrix(yt, yp, labels=labels)
    score = proba[:, column] if task == "binary" else None
    outcome, confidence = _calibrated_pair(task, yt, yp, proba, labels, positive)
    return Evaluation(
        {k: out[k] for k in CLASSIFICATION_METRICS},
        tuple(str(c) for c in labels),
        tuple(tuple(int(v) for v in row) for row in cm),
        str(positive) if task == "binary" else None,
        calibration_error(outcome, confidence),
        _intervals(realised_performance(task, yt, yp, score, positive)),
        len(yt),
        fit_recalibration(outcome, confidence),
    )


def _intervals(estimates: tuple[PerformanceEstimate, ...]) -> dict[str, tuple[float, float]]:
    return {e.metric: (e.lower, e.upper) for e in estimates if e.lower is not None and e.upper is not None}


def _calibrated_pair(
    task: Task, yt: np.ndarray, yp: np.ndarray, proba: np.ndarray, labels: np.ndarray, positive: Any
) -> tuple[np.ndarray, np.ndarray]:
    """What calibration is judged on (outcome, confidence). Binary: whether the row was positive, and the
    positive-class probability (what estimated performance reads); multiclass: whether the prediction was right,
    and the predicted class's probability."""
    if task == "binary":
        return yt == positive, proba[:, int(np.flatnonzero(labels == positive)[0])]
    sorter = np.argsort(labels)
    columns = sorter[np.searchsorted(labels, yp, sorter=sorter)]  # each prediction's column in ``proba``
    return yt == yp, proba[np.arange(len(yp)), columns]
