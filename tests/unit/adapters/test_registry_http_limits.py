"""Requests to an MLflow server are bounded by registry.timeout_s and registry.retries (MLflow's own defaults let a
poll hang for minutes while the server restarts); a value the user gave MLflow's variables wins."""

from __future__ import annotations

import os

import pytest

from shipml.adapters.registry import MlflowRegistry
from shipml.config import RegistrySettings

VARIABLES = ("MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR")


@pytest.fixture(autouse=True)
def _no_mlflow_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES:  # set first, so that what the test's registry sets is undone afterwards
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


def test_a_remote_registry_gets_the_settings_limits() -> None:
    MlflowRegistry(RegistrySettings(uri="http://127.0.0.1:9", timeout_s=7, retries=1))
    assert [os.environ[name] for name in VARIABLES] == ["7", "1", "1"]


def test_the_users_own_mlflow_variables_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    MlflowRegistry(RegistrySettings(uri="http://127.0.0.1:9"))
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "0"
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "10"


def test_the_embedded_registry_sets_nothing(tmp_path: object) -> None:
    MlflowRegistry(RegistrySettings(uri=f"sqlite:///{tmp_path}/r.db"))
    assert not any(name in os.environ for name in VARIABLES)
