from __future__ import annotations

from pathlib import Path

import pytest

from shipml.config import load_settings, redact_uri, starter_config, worker_environment
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


def test_command_line_overrides_beat_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`shipml serve --model new@staging --port 18000` serves what it was told, whatever SHIPML_* says."""
    path = write(tmp_path, "serve: {host: 127.0.0.2, workers: 2}\n")
    monkeypatch.setenv("SHIPML_SERVE__MODEL", "old@production")
    monkeypatch.setenv("SHIPML_SERVE__PORT", "9000")
    monkeypatch.setenv("SHIPML_TRAINING__CV_FOLDS", "3")
    settings = load_settings(path, overrides={"serve": {"model": "new@staging", "port": "18000"}})
    assert (settings.serve.model, settings.serve.port) == ("new@staging", 18000)
    assert settings.serve.host == "127.0.0.2" and settings.serve.workers == 2  # the file is still read
    assert settings.training.cv_folds == 3  # and the environment, for what the flags do not set


@pytest.mark.parametrize("env", ["SHIPML_REGISTRY_URI", "SHIPML_REGISTRY__URI"])
def test_registry_uri_flag_beats_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: str) -> None:
    monkeypatch.setenv(env, "http://127.0.0.1:5999")
    settings = load_settings(write(tmp_path, ""), overrides={"registry": {"uri": "http://127.0.0.1:6000"}})
    assert settings.registry.uri == "http://127.0.0.1:6000"


def test_a_bad_override_is_reported_with_its_key(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    with pytest.raises(ConfigError) as info:
        load_settings(path, overrides={"serve": {"port": "0"}})
    assert info.value.lines() == [f"{path}: serve.port: must be >= 1, got 0"]


def test_workers_get_the_registry_uri_flag_over_a_users_short_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers rebuild Settings from the environment, where SHIPML_REGISTRY_URI ranks highest."""
    monkeypatch.setenv("SHIPML_REGISTRY_URI", "http://127.0.0.1:5999")
    for key, value in worker_environment(None, {"registry.uri": "http://127.0.0.1:6000"}).items():
        monkeypatch.setenv(key, value)
    assert load_settings(write(tmp_path, "")).registry.uri == "http://127.0.0.1:6000"


@pytest.mark.parametrize("uri", ["sqlite:///:memory:", "sqlite://", "sqlite+pysqlite:///:memory:"])
def test_in_memory_sqlite_store_is_refused(tmp_path: Path, uri: str) -> None:
    path = write(tmp_path, f"store: {{uri: '{uri}'}}\n")
    assert problems(path) == [
        f"{path}: store.uri: an in-memory SQLite database cannot hold the prediction log (each connection gets "
        f"its own, empty one), got {uri!r}; use a file, e.g. sqlite:///.shipml/predictions.db"
    ]


def test_file_and_server_stores_are_accepted(tmp_path: Path) -> None:
    for uri in ("sqlite:///.shipml/p.db", "sqlite:////var/lib/p.db", "postgresql+psycopg://u:p@db/x"):
        assert load_settings(write(tmp_path, f"store: {{uri: '{uri}'}}\n")).store.uri == uri


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("postgresql+psycopg://shipml:S3cret@db/x", "postgresql+psycopg://shipml:***@db/x"),
        ("https://user:tok@mlflow.example/api", "https://user:***@mlflow.example/api"),
        ("https://tok3n@mlflow.example/", "https://***@mlflow.example/"),
        ("mysql://u:p@ss@h/db", "mysql://u:***@h/db"),
        ("sqlite:///.shipml/mlflow.db", "sqlite:///.shipml/mlflow.db"),
        ("http://127.0.0.1:5000/a@b", "http://127.0.0.1:5000/a@b"),
    ],
)
def test_redact_uri_masks_credentials_only(uri: str, shown: str) -> None:
    assert redact_uri(uri) == shown
    assert redact_uri(f"cannot open {uri}: refused") == f"cannot open {shown}: refused"


def test_the_canary_variant_name_is_reserved_for_deploy_canary(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "serve:\n  variants:\n    - {name: main, model: churn/1, weight: 0.5}\n"
        "    - {name: canary, model: churn/2, weight: 0.5}\n"
        "  shadow:\n    - {name: canary, model: churn/3, fraction: 0.1}\n",
    )
    reserved = "is reserved for the candidate of `shipml deploy canary`; choose another name"
    lines = problems(path)
    assert f"serve.variants[1].name: 'canary' {reserved}" in lines
    assert f"serve.shadow[0].name: 'canary' {reserved}" in lines


@pytest.mark.parametrize(
    ("window", "problem"),
    [
        ("5x", "expected a positive duration such as 30m, 24h or 7d, got '5x'"),
        ("99999999d", "must be at most 2932896d (years 1970 to 9999), got '99999999d'"),
    ],
)
def test_a_bad_monitor_window_is_refused_when_the_config_loads(tmp_path: Path, window: str, problem: str) -> None:
    path = write(tmp_path, f"monitor:\n  window: {window}\n")
    assert problems(path) == [f"{path}: monitor.window: {problem}"]


def test_variant_and_shadow_names_must_fit_the_stores_variant_column(tmp_path: Path) -> None:
    """Correctness review M4: a name of 51 characters failed every Postgres write of its group commit."""
    long, nul = "v" * 51, "a\\u0000b"
    path = write(
        tmp_path,
        f"serve:\n  variants:\n    - {{name: {long}, model: churn/1, weight: 0.5}}\n"
        f'    - {{name: "{nul}", model: churn/2, weight: 0.5}}\n'
        f"  shadow:\n    - {{name: {long}, model: churn/3, fraction: 0.1}}\n",
    )
    rule = "must be at most 50 characters, none of them a control character (the prediction store's variant column)"
    assert problems(path) == [
        f"{path}: serve.variants.0.name: {rule}, got '{long}'",
        f"{path}: serve.variants.1.name: {rule}, got 'a\\x00b'",
        f"{path}: serve.shadow.0.name: {rule}, got '{long}'",
    ]
    fits = write(tmp_path, f"serve:\n  variants:\n    - {{name: {'v' * 50}, model: churn/1, weight: 1}}\n")
    assert load_settings(fits).serve.variants[0].name == "v" * 50


def test_the_variant_name_limit_is_the_stores_column_length() -> None:
    from shipml.adapters.store import tables
    from shipml.config import VARIANT_NAME_MAX

    columns = [tables.predictions.c.variant, tables.prediction_batches.c.variant, tables.feature_histograms.c.variant]
    assert {c.type.length for c in columns} == {VARIANT_NAME_MAX}  # type: ignore[attr-defined]
