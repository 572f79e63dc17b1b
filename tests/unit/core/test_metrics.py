from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from shipml.core.metrics import evaluate, positive_class
from shipml.errors import ConfigError

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
