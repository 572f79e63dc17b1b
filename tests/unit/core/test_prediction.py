"""The prediction's vocabulary: each thing derived from a Prediction by one rule (core/prediction.py)."""

from __future__ import annotations

import numpy as np
import pytest

from shipml.core.prediction import (
    Prediction,
    Routed,
    Served,
    Status,
    Truth,
    positive_column,
    positive_from_score,
    score_of,
)
from shipml.core.records import FieldError

BINARY = Served("churn", "3", "main", classes=("no", "yes"))
MULTI = Served("plan", "1", classes=("a", "b", "c"))
REGRESSOR = Served("spend", "2")


def answered(served: Served, **outputs: object) -> Prediction:
    return Prediction("id-1", 10.0, served, 4, {"tenure": 3.0}, "k", 0.5, **outputs)  # type: ignore[arg-type]


def test_the_score_is_the_second_class_for_binary_the_highest_for_multiclass_and_the_value_for_regression() -> None:
    assert answered(BINARY, label="no", proba=[0.7, 0.3]).score == 0.3
    assert answered(MULTI, label="b", proba=[0.2, 0.5, 0.3]).score == 0.5
    assert answered(REGRESSOR, value=12.5).score == 12.5
    assert Prediction("x", 0, BINARY, 0, {}, None, 0, Status.INVALID).score is None


@pytest.mark.parametrize(("positive", "expected"), [("yes", 0.3), ("no", 0.7), (None, 0.3), ("maybe", 0.3)])
def test_the_positive_probability_follows_the_named_class(positive: str | None, expected: float) -> None:
    """The histograms bin it; the stored score (the second class's) converts to it by the same rule."""
    p = answered(BINARY, label="no", proba=[0.7, 0.3])
    assert p.positive_probability(positive) == expected
    assert p.binned("positive", positive) == expected
    stored = np.array([score_of(p.proba or ())])
    assert positive_from_score(stored, BINARY.classes, positive).tolist() == pytest.approx([expected])


def test_what_the_histograms_bin_per_kind() -> None:
    assert answered(MULTI, label=2, proba=[0.1, 0.1, 0.8]).binned("label", None) == "2"
    assert answered(REGRESSOR, value=4.0).binned("value", None) == 4.0
    assert positive_column(("a", "b"), "a") == 0 and positive_column(("a", "b"), None) == 1


def test_the_answer_of_a_batch_entry_and_of_one_record() -> None:
    p = answered(BINARY, label="no", proba=[0.7, 0.3])
    assert p.answer() == {"index": 4, "prediction_id": "id-1", "predicted_class": "no",
                          "probabilities": {"no": 0.7, "yes": 0.3}}  # fmt: skip
    assert p.answer(single=True) == {
        "prediction_id": "id-1",
        "predicted_class": "no",
        "probabilities": {"no": 0.7, "yes": 0.3},
        "model": {"name": "churn", "version": "3", "variant": "main"},
    }
    routed = answered(REGRESSOR, value=1.5, routed=Routed.KEY)
    assert routed.answer() == {"index": 4, "prediction_id": "id-1", "value": 1.5, "variant": "main", "version": "2",
                               "routed_by": "key"}  # fmt: skip
    assert routed.answer(single=True)["routed_by"] == "key"


def test_a_refused_record_answers_its_errors_and_logs_them() -> None:
    error = FieldError(4, "tenure", "min", "must be >= 0, got -1")
    refused = Prediction("id-2", 0, BINARY, 4, {"tenure": -1}, None, 0, Status.INVALID, errors=(error,))
    assert refused.answer() == {"index": 4, "error": {"code": "validation_error", "details": [error.to_dict()]}}
    assert refused.outputs() == {"errors": [error.to_dict()]}
    broken = Prediction("id-3", 0, BINARY, 0, {}, None, 0, Status.OUTPUT_INVALID, errors=(error,))
    assert broken.answer()["error"]["code"] == "model_output_invalid"
    failed = Prediction("id-4", 0, BINARY, 0, {}, None, 0, Status.ERROR, failure="timeout")
    assert failed.outputs() == {"error": "timeout"} and not failed.ok


def test_the_logged_outputs_of_an_answer() -> None:
    assert answered(BINARY, label="yes", proba=[0.1, 0.9]).outputs() == {
        "predicted_class": "yes",
        "probabilities": {"no": 0.1, "yes": 0.9},
    }
    assert answered(REGRESSOR, value=3.0).outputs() == {"value": 3.0}


def test_truth_is_a_label_for_a_classifier_and_a_finite_value_for_a_regressor() -> None:
    assert Truth("1", None).holds(regression=False) and not Truth(None, 2.0).holds(regression=False)
    assert Truth(None, 2.0).holds(regression=True)
    assert not any(Truth(None, v).holds(regression=True) for v in (None, float("nan"), float("inf")))
