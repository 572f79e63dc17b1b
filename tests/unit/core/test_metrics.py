from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as skm

from shipml.core.metrics import CLASSIFICATION_METRICS, evaluate, positive_class
from shipml.core.performance import calibration_error
from shipml.errors import ConfigError
from shipml.pipelines.train import fit, payload_for
from tests.support.project import churn_settings

Y = np.array(["churned", "stayed", "stayed", "stayed", "churned", "stayed"])
PRED = np.array(["churned", "stayed", "churned", "stayed", "stayed", "stayed"])
# columns in the classes' sorted order: churned, stayed
PROBA = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7], [0.4, 0.6], [0.1, 0.9]])
LABELS = np.array(["churned", "stayed"])


def test_precision_recall_and_f1_measure_the_positive_class_not_the_second_label() -> None:
    got = evaluate("binary", Y, PRED, PROBA, LABELS, positive="churned")
    assert got.positive == "churned"
    assert got.metrics["recall"] == skm.recall_score(Y, PRED, pos_label="churned") == 0.5
    assert got.metrics["precision"] == skm.precision_score(Y, PRED, pos_label="churned") == 0.5
    assert got.metrics["f1"] == skm.f1_score(Y, PRED, pos_label="churned")
    assert got.metrics["roc_auc"] == skm.roc_auc_score(Y == "churned", PROBA[:, 0])
    stayed = evaluate("binary", Y, PRED, PROBA, LABELS, positive="stayed")
    assert stayed.metrics["recall"] == skm.recall_score(Y, PRED, pos_label="stayed") == 0.75


@pytest.mark.parametrize(
    ("labels", "y", "expected"),
    [
        (["churned", "stayed"], ["stayed", "stayed", "churned"], "churned"),  # the rarer one
        (["a", "b"], ["a", "a", "b"], "b"),
        (["no", "yes"], ["yes", "yes", "no"], "yes"),  # named, even when it is the common one
        (["False", "True"], ["True", "True", "False"], "True"),
        ([0, 1], [1, 1, 0], 1),
        (["x", "y"], ["x", "y"], "y"),  # a tie: the second label, as before
    ],
)
def test_the_default_positive_class(labels: list[object], y: list[object], expected: object) -> None:
    assert positive_class(labels, np.array(y, dtype=object)) == expected


def test_a_configured_positive_class_wins_and_must_be_a_label() -> None:
    assert positive_class([0, 1], np.array([1, 1, 0]), "0") == 0
    with pytest.raises(ConfigError) as info:
        positive_class(["churned", "stayed"], Y, "left")
    assert info.value.lines() == [
        "training.positive_class: must be one of the target's labels 'churned', 'stayed', got 'left'"
    ]


def test_calibration_error_is_recorded_beside_the_gated_metrics_not_among_them() -> None:
    """Gates accept the names in metric_names; the calibration error travels in ``recorded()`` only."""
    got = evaluate("binary", Y, PRED, PROBA, LABELS, positive="churned")
    assert set(got.metrics) == set(CLASSIFICATION_METRICS)
    assert got.calibration_error == calibration_error(Y == "churned", PROBA[:, 0])
    assert got.recorded() == {**got.metrics, "calibration_error": got.calibration_error}
    # of the positive class's probability: another positive class, another calibration
    assert evaluate("binary", Y, PRED, PROBA, LABELS, positive="stayed").calibration_error == calibration_error(
        Y == "stayed", PROBA[:, 1]
    )


def test_multiclass_calibration_error_is_of_the_predicted_classs_probability() -> None:
    rng = np.random.default_rng(0)
    labels = np.array(["bronze", "gold", "silver"])
    proba = rng.dirichlet([1, 1, 1], 300)
    y = labels[[rng.choice(3, p=row) for row in proba]]
    pred = labels[proba.argmax(axis=1)]
    got = evaluate("multiclass", y, pred, proba, labels)
    assert got.calibration_error == calibration_error(y == pred, proba.max(axis=1))
    assert got.calibration_error is not None and got.calibration_error < 0.05  # labels drawn from proba
    # a decision rule other than the argmax: the probability of the class actually predicted
    second = np.argsort(proba, axis=1)[:, 1]
    chosen = evaluate("multiclass", y, labels[second], proba, labels)
    assert chosen.calibration_error == calibration_error(y == labels[second], proba[np.arange(300), second])
    overconfident = np.where(proba == proba.max(axis=1, keepdims=True), 0.98, 0.01)
    assert evaluate("multiclass", y, pred, overconfident, labels).calibration_error > 0.2  # type: ignore[operator]


def test_regression_has_no_calibration_error() -> None:
    got = evaluate("regression", [1.0, 2.0, 3.0], [1.1, 1.9, 3.2], None, None)
    assert got.calibration_error is None
    assert got.recorded() == got.metrics


def test_training_logs_the_calibration_error_with_the_holdout_metrics(churn_csv: Path) -> None:
    """The version's metrics are its run's MLflow metrics (what estimated performance reads) and
    shipml/evaluation.json keeps the holdout ones. (A pipelines test, kept here with the metric it checks.)"""
    settings = churn_settings(churn_csv)
    result = fit(settings)
    payload = payload_for(settings, result)
    assert result.holdout.calibration_error is not None
    assert payload.metrics["calibration_error"] == result.holdout.calibration_error
    evaluation = json.loads(payload.files["shipml/evaluation.json"])
    assert evaluation["holdout"]["calibration_error"] == result.holdout.calibration_error
    assert "cv_calibration_error_mean" not in payload.metrics  # only the holdout's is recorded
    # the holdout's own intervals, which a monitored window is compared with
    assert evaluation["holdout_rows"] == result.rows[1]
    assert set(evaluation["holdout_intervals"]) == {"accuracy", "f1", "roc_auc"}
    for metric, (lower, upper) in evaluation["holdout_intervals"].items():
        assert lower <= evaluation["holdout"][metric] <= upper, metric
    # the map estimated performance applies to the scores, fitted on the holdout
    assert result.holdout.recalibration is not None
    assert evaluation["recalibration"] == result.holdout.recalibration.to_dict()
