"""train, promote and rollback against a real `mlflow server` on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cli import shipml
from tests.support.mlflow_server import mlflow_server as running_mlflow_server
from tests.support.project import SMALL_FOREST

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as (url, _):
        yield url


def test_train_promote_rollback_against_a_tracking_server(mlflow_server: str, tmp_path: Path) -> None:
    env = {"SHIPML_REGISTRY_URI": mlflow_server, "SHIPML_TRAINING__CV_FOLDS": "2"}
    config = (Path(__file__).parents[2] / "examples/churn/shipml.yaml").read_text()
    config = config.replace("n_estimators: 100", f"n_estimators: {SMALL_FOREST['n_estimators']}")
    (tmp_path / "shipml.yaml").write_text(config)
    assert shipml(tmp_path, "example", "churn", ".shipml/data/churn.csv", "--rows", "1500").returncode == 0
    for _ in range(2):
        trained = shipml(tmp_path, "train", env=env)
        assert trained.returncode == 0, trained.stdout + trained.stderr
    for version in ("1", "2"):
        promoted = shipml(tmp_path, "models", "promote", "churn", version, "--to", "production", env=env)
        assert promoted.returncode == 0, promoted.stderr
    listing = shipml(tmp_path, "models", "list", env=env).stdout
    assert "│ churn │ 2      │ 2          │ 2       │ 1        │" in listing
    back = shipml(tmp_path, "models", "rollback", "churn", "--reason", "test", env=env)
    assert back.returncode == 0, back.stderr
    assert "churn@production: 2 -> 1" in back.stdout
    history = shipml(tmp_path, "models", "history", "churn", env=env).stdout
    assert "rollback: test" in history
    # loads through the server: integrity-checked, and one cached copy per version however often loaded
    for _ in range(2):
        checked = shipml(tmp_path, "validate", ".shipml/data/churn.csv", "--model", "churn@production", env=env)
        assert checked.returncode == 0, checked.stdout + checked.stderr
    cached = [p.name for p in (tmp_path / ".shipml" / "cache" / "churn").iterdir() if p.is_dir()]
    assert len(cached) == 1 and cached[0].startswith("1-"), cached
    scored = shipml(tmp_path, "predict", ".shipml/data/churn.csv", "-m", "churn@production", "-o", "s.parquet", env=env)
    assert scored.returncode == 0, scored.stderr
    assert "with churn/1" in scored.stdout
    # nothing went to the embedded store
    assert not (tmp_path / ".shipml" / "mlflow.db").exists()
