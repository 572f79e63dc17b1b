from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shipml.config import GateSettings
from shipml.errors import ConfigError, DataLoadError, DataValidationError, TrainingError
from shipml.pipelines.train import fit, judge_gates
from tests.conftest import churn_settings


def test_same_data_config_and_seed_give_the_same_metrics_to_the_last_digit(churn_csv: Path) -> None:
    settings = churn_settings(churn_csv)
    a, b = fit(settings), fit(settings)
    assert a.holdout.metrics == b.holdout.metrics
    assert a.cv == b.cv
    assert a.lineage["shipml.data_sha256"] == b.lineage["shipml.data_sha256"]
    other_seed = fit(churn_settings(churn_csv, training={"seed": 1}))
    assert other_seed.holdout.metrics != a.holdout.metrics


def test_binary_metrics_confusion_matrix_and_holdout_size(churn_csv: Path) -> None:
    result = fit(churn_settings(churn_csv))
    m = result.holdout.metrics
    assert set(m) == {"accuracy", "precision", "recall", "f1", "roc_auc", "log_loss"}
    assert m["roc_auc"] > 0.75  # the example has a real signal
    assert result.rows == (1600, 400)
    assert sum(sum(r) for r in result.holdout.confusion) == 400
    assert result.holdout.labels == ("0", "1")


def test_holdout_is_evaluated_through_the_preprocessing(churn_csv: Path, churn_df: pd.DataFrame) -> None:
    """The seed article scored the bare model on raw features; the pipeline must do the preprocessing."""
    result = fit(churn_settings(churn_csv))
    raw = churn_df.head(50)[result.schema.names]
    from shipml.pipelines.data import feature_frame

    proba = result.pipeline.predict_proba(feature_frame(raw, result.schema))
    manual = result.pipeline.named_steps["model"].predict_proba(
        result.pipeline.named_steps["preprocess"].transform(feature_frame(raw, result.schema))
    )
    np.testing.assert_array_equal(proba, manual)


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
