"""The LightGBM and XGBoost extras: train, register (skops with their types trusted), load and score."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cli import shipml
from tests.support.project import CONFIG

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("module", "estimator", "params"),
    [
        ("lightgbm", "lightgbm.LGBMClassifier", "    n_estimators: 30\n    verbose: -1\n"),
        ("xgboost", "xgboost.XGBClassifier", "    n_estimators: 30\n    n_jobs: 1\n"),
    ],
)
def test_extra_estimator_end_to_end(tmp_path: Path, module: str, estimator: str, params: str) -> None:
    pytest.importorskip(module, reason=f"the `{module}` extra is not installed: pip install 'shipml[{module}]'")
    config = CONFIG.replace("sklearn.ensemble.RandomForestClassifier", estimator)
    config = config.replace("    n_estimators: 100\n    max_depth: 10\n    n_jobs: 1\n", params)
    (tmp_path / "shipml.yaml").write_text(config)
    assert shipml(tmp_path, "example", "churn", ".shipml/data/churn.csv", "--rows", "1500").returncode == 0
    trained = shipml(tmp_path, "train", env={"SHIPML_TRAINING__CV_FOLDS": "2"})
    assert trained.returncode == 0, trained.stdout + trained.stderr
    scored = shipml(tmp_path, "predict", ".shipml/data/churn.csv", "-m", "churn/1", "-o", "s.parquet")
    assert scored.returncode == 0, scored.stderr
    assert "scored 1500 rows with churn/1" in scored.stdout
