"""The quickstart's "Next:" lines: what a new user runs after it, each fitting an 80-column terminal."""

from __future__ import annotations

from pathlib import Path

import pytest

from shipml.cli.data import _next_steps

DATA = Path(".shipml/data/churn.csv")


def test_next_leads_on_to_scoring_serving_and_the_monitoring_tour(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # a pip-installed shipml in some directory: there is no .venv to activate
    lines = _next_steps("churn", DATA)
    assert not any("activate" in line for line in lines)
    assert "shipml predict .shipml/data/churn.csv -m churn@production -o scores.parquet" in lines
    assert any(line.startswith("shipml serve ") and "churn@production" in line for line in lines)
    assert any("monitoring tour" in line for line in lines)
    assert "shipml monitor drift --window 1h" in lines
    assert all(len(f"  {line}") <= 80 for line in lines)


def test_make_quickstarts_venv_is_activated_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".venv").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.prefix", str(tmp_path / ".venv"))
    monkeypatch.delenv("VIRTUAL_ENV", raising=False)
    assert _next_steps("churn", DATA)[0] == "source .venv/bin/activate"
    monkeypatch.setenv("VIRTUAL_ENV", str(tmp_path / ".venv"))  # already active: nothing to say
    assert "source .venv/bin/activate" not in _next_steps("churn", DATA)
