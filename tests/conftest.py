"""Shared fixtures: a clean environment, the example data, a registry in a temporary directory."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from shipml.config import Settings, settings_from_mapping
from shipml.examples.churn import churn_config, generate_churn

SMALL_FOREST = {"n_estimators": 20, "max_depth": 6, "n_jobs": 1}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No SHIPML_* from the machine leaks into a test."""
    for key in list(os.environ):
        if key.startswith("SHIPML_"):
            monkeypatch.delenv(key)


@pytest.fixture
def churn_df() -> pd.DataFrame:
    return generate_churn(2_000, seed=7)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh project directory as the current directory."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def churn_settings(data_file: Path, **overrides: Any) -> Settings:
    """The example config, pointed at ``data``, with a small forest for speed."""
    import yaml

    raw = yaml.safe_load(churn_config())
    raw["data"]["path"] = str(data_file)
    raw["model"]["params"] = dict(SMALL_FOREST)
    raw["training"]["cv_folds"] = 3
    for section, values in overrides.items():
        if isinstance(values, dict) and isinstance(raw.get(section), dict):
            raw[section].update(values)
        else:
            raw[section] = values
    return settings_from_mapping(raw, "test")


@pytest.fixture
def churn_csv(workdir: Path, churn_df: pd.DataFrame) -> Path:
    path = workdir / "churn.csv"
    churn_df.to_csv(path, index=False)
    return path


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The figures the reliability tests print (lines starting ``FIGURE``), gathered at the end of the run,
    so `make test` shows them whatever pytest captured."""
    lines = []
    for outcome in ("passed", "failed", "xfailed", "xpassed"):
        for report in terminalreporter.stats.get(outcome, []):
            text = getattr(report, "capstdout", "") or ""
            lines += [line for line in text.splitlines() if line.startswith("FIGURE")]
    if lines:
        terminalreporter.section("figures")
        for line in lines:
            terminalreporter.write_line(line)
