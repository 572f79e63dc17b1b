from __future__ import annotations

from pathlib import Path

import pytest

from shipml.config import load_settings, starter_config
from shipml.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "shipml.yaml"
    path.write_text(text)
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    return info.value.lines()


def test_bound_violation_names_key_path_and_value(tmp_path: Path) -> None:
    path = write(tmp_path, "training:\n  cv_folds: 1\n")
    assert problems(path) == [f"{path}: training.cv_folds: must be >= 2, got 1"]


def test_every_problem_is_reported_once(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "model: {name: m, task: tertiary}\ndata: {}\ntraining: {cv_folds: x, seed: -1, gatez: {}}\n",
    )
    lines = problems(path)
    assert f"{path}: model.task: must be 'binary', 'multiclass' or 'regression', got 'tertiary'" in lines
    assert f"{path}: data.target: required value missing" in lines
    assert f"{path}: training.seed: must be >= 0, got -1" in lines
    assert f"{path}: training.gatez: unknown key, did you mean 'gates'?" in lines
    assert any(line.startswith(f"{path}: training.cv_folds: must be a valid integer") for line in lines)
    assert len(lines) == 5


def test_gate_without_bound_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "training:\n  gates:\n    roc_auc: {}\n")
    assert problems(path) == [f"{path}: training.gates.roc_auc: needs `min` or `max`"]


def test_bad_yaml_names_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "model:\n  name: [a\n")
    [line] = problems(path)
    assert line.startswith(f"{path}:3:1: invalid YAML:")


def test_missing_file(tmp_path: Path) -> None:
    assert problems(tmp_path / "nope.yaml") == [f"config file not found: {tmp_path / 'nope.yaml'}"]


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "training:\n  cv_folds: 5\n  seed: 1\n")
    monkeypatch.setenv("SHIPML_TRAINING__CV_FOLDS", "3")
    monkeypatch.setenv("SHIPML_REGISTRY_URI", "http://127.0.0.1:5999")
    settings = load_settings(path)
    assert settings.training.cv_folds == 3
    assert settings.training.seed == 1  # the rest of the section is kept
    assert settings.registry.uri == "http://127.0.0.1:5999"


def test_bad_environment_value_is_reported_with_its_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "")
    monkeypatch.setenv("SHIPML_TRAINING__CV_FOLDS", "1")
    assert problems(path) == [f"{path}: training.cv_folds: must be >= 2, got 1"]


def test_defaults_without_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings.registry.uri == "sqlite:///.shipml/mlflow.db"
    assert settings.model is None
    with pytest.raises(ConfigError, match="model: required section missing"):
        settings.require_training()


def test_starter_config_is_valid(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, starter_config()))
    assert settings.model is not None and settings.model.name == "my-model"
    assert settings.training.gates["roc_auc"].min == 0.75


def test_example_config_in_repository_is_the_embedded_one() -> None:
    from shipml.examples.churn import churn_config

    assert (REPO / "examples" / "churn" / "shipml.yaml").read_text() == churn_config()
