from __future__ import annotations

import pytest

from shipml.core.model import make_estimator
from shipml.errors import TrainingError


def test_unknown_module_names_the_key() -> None:
    with pytest.raises(TrainingError, match=r"model.estimator: cannot import 'sklearn.nope'"):
        make_estimator("sklearn.nope.Forest", {}, "binary", 0)


def test_unknown_class() -> None:
    with pytest.raises(TrainingError, match="has no estimator class 'Nope'"):
        make_estimator("sklearn.ensemble.Nope", {}, "binary", 0)


def test_missing_extra_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "lightgbm", None)
    with pytest.raises(TrainingError, match=r"pip install 'shipml\[lightgbm\]'"):
        make_estimator("lightgbm.LGBMClassifier", {}, "binary", 0)


def test_task_mismatch_and_unknown_params() -> None:
    with pytest.raises(TrainingError, match="is not a classifier"):
        make_estimator("sklearn.linear_model.Ridge", {}, "binary", 0)
    with pytest.raises(TrainingError, match="is not a regressor"):
        make_estimator("sklearn.linear_model.LogisticRegression", {}, "regression", 0)
    with pytest.raises(TrainingError, match=r"model.params: RandomForestClassifier has no parameter\(s\) n_trees"):
        make_estimator("sklearn.ensemble.RandomForestClassifier", {"n_trees": 3}, "binary", 0)


def test_seed_is_passed_when_not_given() -> None:
    est = make_estimator("sklearn.ensemble.RandomForestClassifier", {}, "binary", 123)
    assert est.get_params()["random_state"] == 123
    est = make_estimator("sklearn.ensemble.RandomForestClassifier", {"random_state": 5}, "binary", 123)
    assert est.get_params()["random_state"] == 5
