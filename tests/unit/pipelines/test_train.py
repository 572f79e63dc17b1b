from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn import metrics as skm

from shipml.config import GateSettings
from shipml.core.profile import numeric_profile
from shipml.errors import ConfigError, DataLoadError, DataValidationError, TrainingError
from shipml.examples.churn import generate_churn
from shipml.pipelines.data import feature_frame
from shipml.pipelines.train import TrainResult, config_artifact, fit, judge_gates, payload_for
from tests.support.project import churn_settings


@pytest.fixture(scope="module")
def default_fit(tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    """One fit of the default settings on the ``churn_csv`` data, shared by the tests that only read it."""
    data = tmp_path_factory.mktemp("train") / "churn.csv"
    generate_churn(2_000, seed=7).to_csv(data, index=False)
    return fit(churn_settings(data))


def test_same_data_config_and_seed_give_the_same_metrics_to_the_last_digit(
    churn_csv: Path, default_fit: TrainResult
) -> None:
    settings = churn_settings(churn_csv)
    a, b = default_fit, fit(settings)  # the module's fit and one in this test: the same numbers
    assert a.holdout.metrics == b.holdout.metrics
    assert a.cv == b.cv
    assert a.lineage["shipml.data_sha256"] == b.lineage["shipml.data_sha256"]
    other_seed = fit(churn_settings(churn_csv, training={"seed": 1}))
    assert other_seed.holdout.metrics != a.holdout.metrics


def test_binary_metrics_confusion_matrix_and_holdout_size(default_fit: TrainResult) -> None:
    result = default_fit
    m = result.holdout.metrics
    assert set(m) == {"accuracy", "precision", "recall", "f1", "roc_auc", "log_loss"}
    assert m["roc_auc"] > 0.75  # the example has a real signal
    assert result.rows == (1600, 400)
    assert sum(sum(r) for r in result.holdout.confusion) == 400
    assert result.holdout.labels == ("0", "1")


def test_holdout_metrics_are_the_pipelines_own_on_the_holdout_rows(
    default_fit: TrainResult, churn_df: pd.DataFrame
) -> None:
    """What is gated is what the registered pipeline does on rows it never saw, recomputed here independently."""
    result = default_fit
    holdout = churn_df.loc[list(result.holdout_index)]
    assert len(holdout) == result.rows[1] == 400
    proba = result.pipeline.predict_proba(feature_frame(holdout, result.schema))
    y = holdout["churn"].to_numpy()
    assert list(result.pipeline.classes_) == [0, 1]
    predicted = proba.argmax(axis=1)
    expected = {
        "accuracy": skm.accuracy_score(y, predicted),
        "precision": skm.precision_score(y, predicted, pos_label=1, zero_division=0),
        "recall": skm.recall_score(y, predicted, pos_label=1, zero_division=0),
        "f1": skm.f1_score(y, predicted, pos_label=1, zero_division=0),
        "roc_auc": skm.roc_auc_score(y, proba[:, 1]),
        "log_loss": skm.log_loss(y, proba, labels=[0, 1]),
    }
    assert result.holdout.metrics == pytest.approx(expected, rel=1e-12, abs=1e-12)
    assert result.holdout.confusion == tuple(tuple(int(v) for v in r) for r in skm.confusion_matrix(y, predicted))


def test_prediction_profile_is_of_holdout_predictions(default_fit: TrainResult, churn_df: pd.DataFrame) -> None:
    """In-sample probabilities of a forest are over-confident: drift would be measured against the wrong reference."""
    result = default_fit
    holdout = churn_df.loc[list(result.holdout_index)]
    proba = result.pipeline.predict_proba(feature_frame(holdout, result.schema))[:, 1]
    assert result.profile.prediction == numeric_profile(proba)
    assert result.profile.rows == result.rows[0]  # the features' reference is still the training rows


def test_exact_duplicates_are_dropped_before_the_split(workdir: Path, churn_df: pd.DataFrame) -> None:
    copies = churn_df.sample(90, random_state=1).assign(customer_id=lambda d: d.customer_id + "-copy")
    pd.concat([churn_df, copies], ignore_index=True).to_csv(workdir / "dupes.csv", index=False)
    result = fit(churn_settings(workdir / "dupes.csv"))
    assert result.duplicates_dropped == 90
    assert sum(result.rows) == len(churn_df)
    assert max(result.holdout_index) < len(churn_df)  # the copies (rows 2000+) are the ones dropped
    params = payload_for(churn_settings(workdir / "dupes.csv"), result).params
    assert params["data.duplicates_dropped"] == "90"


def _labelled(workdir: Path, churn_df: pd.DataFrame) -> Path:
    df = churn_df.assign(churn=np.where(churn_df.churn == 1, "churned", "stayed"))
    df.to_csv(workdir / "labelled.csv", index=False)
    return workdir / "labelled.csv"


def test_binary_metrics_measure_the_positive_class_not_the_second_label(workdir: Path, churn_df: pd.DataFrame) -> None:
    data = _labelled(workdir, churn_df)
    assert (churn_df.churn == 1).mean() < 0.5  # so "churned", sorted first, is the rarer label
    result = fit(churn_settings(data))
    holdout = churn_df.loc[list(result.holdout_index)]
    y = np.where(holdout.churn == 1, "churned", "stayed")
    proba = result.pipeline.predict_proba(feature_frame(holdout, result.schema))
    predicted = result.pipeline.classes_[proba.argmax(axis=1)]
    assert result.holdout.positive == "churned"
    assert result.holdout.metrics["recall"] == pytest.approx(skm.recall_score(y, predicted, pos_label="churned"))
    assert result.holdout.metrics["precision"] == pytest.approx(
        skm.precision_score(y, predicted, pos_label="churned", zero_division=0)
    )
    # the profile keeps the positive class's probability
    assert result.profile.prediction == numeric_profile(proba[:, 0])
    chosen = fit(churn_settings(data, training={"positive_class": "stayed"}))
    assert chosen.holdout.positive == "stayed"
    assert chosen.holdout.metrics["recall"] == pytest.approx(skm.recall_score(y, predicted, pos_label="stayed"))
    assert (
        json.loads(payload_for(churn_settings(data), result).files["shipml/evaluation.json"])["positive_class"]
        == "churned"
    )


def test_unknown_positive_class_is_a_config_error(workdir: Path, churn_df: pd.DataFrame) -> None:
    with pytest.raises(ConfigError, match=r"training.positive_class: must be one of the target's labels 'churned', "):
        fit(churn_settings(_labelled(workdir, churn_df), training={"positive_class": "left"}))


def test_published_config_has_no_credentials(churn_csv: Path, default_fit: TrainResult) -> None:
    settings = churn_settings(
        churn_csv,
        registry={"uri": "https://user:t0ken-secret@mlflow.example/"},
        store={"uri": "postgresql+psycopg://u:S3cret@db/x"},
        auth={"keys": [{"name": "app", "sha256": "a" * 64}]},
    )
    text = payload_for(settings, default_fit).files["shipml/config.yaml"]
    assert text == config_artifact(settings)
    assert "S3cret" not in text and "t0ken-secret" not in text
    published = yaml.safe_load(text)
    assert published["registry"]["uri"] == "https://user:***@mlflow.example/"
    assert not {"store", "serve", "auth"} & set(published)
    assert published["training"]["cv_folds"] == 3


def test_multiclass_and_regression(workdir: Path, churn_df: pd.DataFrame) -> None:
    df = churn_df.drop(columns=["churn"])
    df["plan"] = np.where(df.monthly_charges > 80, "gold", np.where(df.monthly_charges > 45, "silver", "bronze"))
    df.to_csv(workdir / "multi.csv", index=False)
    features = [
        {"name": n, "kind": "numeric", "nullable": n == "total_charges"} for n in ("tenure", "total_charges", "data_gb")
    ]
    features.append({"name": "internet", "kind": "categorical"})
    multi = churn_settings(
        workdir / "multi.csv",
        model={
            "task": "multiclass",
            "estimator": "sklearn.ensemble.HistGradientBoostingClassifier",
            "params": {"max_iter": 30},
        },
        data={"path": str(workdir / "multi.csv"), "target": "plan", "features": features},
        training={"gates": {}},
    )
    result = fit(multi)
    assert result.holdout.labels == ("bronze", "gold", "silver")
    assert 0.5 < result.holdout.metrics["roc_auc"] <= 1.0
    reg = churn_settings(
        workdir / "multi.csv",
        model={"task": "regression", "estimator": "sklearn.linear_model.Ridge", "params": {"alpha": 1.0}},
        data={"path": str(workdir / "multi.csv"), "target": "monthly_charges", "features": features},
        training={"gates": {"r2": {"min": 0.1}}},
    )
    out = fit(reg)
    assert set(out.holdout.metrics) == {"rmse", "mae", "r2"}
    assert out.holdout.metrics["r2"] > 0.3


def test_invalid_data_is_refused_with_the_report(workdir: Path, churn_df: pd.DataFrame) -> None:
    churn_df.assign(total_charges=np.nan).to_csv(workdir / "bad.csv", index=False)
    with pytest.raises(DataValidationError) as info:
        fit(churn_settings(workdir / "bad.csv"))
    assert "total_charges: all_null" in info.value.message


def test_gate_on_unknown_metric_is_refused_before_any_work(churn_csv: Path) -> None:
    with pytest.raises(ConfigError, match=r"training.gates.rmse: unknown metric for a binary task"):
        fit(churn_settings(churn_csv, training={"gates": {"rmse": {"max": 1}}}))


def test_missing_data_file_and_target(workdir: Path, churn_df: pd.DataFrame) -> None:
    with pytest.raises(DataLoadError, match=r"nope\.csv: file not found"):
        fit(churn_settings(workdir / "nope.csv"))
    churn_df.drop(columns=["churn"]).to_csv(workdir / "nt.csv", index=False)
    with pytest.raises(DataValidationError, match="churn: missing_target"):
        fit(churn_settings(workdir / "nt.csv"))


def test_unknown_estimator(churn_csv: Path) -> None:
    with pytest.raises(TrainingError, match=r"model\.estimator"):
        fit(churn_settings(churn_csv, model={"estimator": "sklearn.ensemble.Nope"}))


def test_gate_verdict_says_which_metric_missed_by_how_much() -> None:
    gates = {"roc_auc": GateSettings(min=0.9), "log_loss": GateSettings(max=0.5)}
    verdict = judge_gates(gates, {"roc_auc": 0.85, "log_loss": 0.4})
    assert not verdict.passed
    assert "gate roc_auc: 0.8500 < min 0.9 (missed by 0.0500)" in verdict.lines
    assert "gate log_loss: 0.4000 <= 0.5 ok" in verdict.lines
