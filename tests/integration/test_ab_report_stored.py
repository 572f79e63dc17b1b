"""Issue 11, item 7: `shipml ab report` keeps the report it printed in the prediction store, where the service's
experiment gauges read it (run as a user would, on a store filled with an experiment's rows and feedback)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa

from shipml.adapters.store import PredictionStore
from shipml.server.monitoring import ExperimentCollector
from tests.support.cli import shipml
from tests.unit.pipelines.test_experiments_job import labelled, log
from tests.unit.server.test_experiment_gauges import scrape, series

pytestmark = pytest.mark.integration

CONFIG = """
serve:
  variants:
    - {name: champion, model: churn/1, weight: 0.5}
    - {name: challenger, model: churn/2, weight: 0.5}
"""


def test_ab_report_stores_the_report_it_printed(tmp_path: Path) -> None:
    (tmp_path / "shipml.yaml").write_text(CONFIG)
    (tmp_path / ".shipml").mkdir()
    store = PredictionStore(f"sqlite:///{tmp_path}/.shipml/predictions.db")
    try:
        log(store, "champion", labelled(400, 0.9))
        log(store, "challenger", labelled(400, 0.6))
    finally:
        store.close()

    done = shipml(tmp_path, "ab", "report", "--window", "1h", "--json")

    assert done.returncode == 1, done.stderr  # 1: rollback
    printed = json.loads(done.stdout)
    store = PredictionStore(f"sqlite:///{tmp_path}/.shipml/predictions.db")
    try:
        (stored,) = store.experiments.recent("churn", limit=10)
        assert (stored.model, stored.verdict, stored.since, stored.until) == (
            "churn",
            "rollback",
            printed["since"],
            printed["until"],
        )
        assert json.loads(stored.to_json()) == printed
        got = scrape(ExperimentCollector(store, "churn", lambda: None))
    finally:
        store.close()
    assert series(got, "shipml_experiment_verdict", "verdict")[("rollback",)] == 1.0
    assert series(got, "shipml_experiment_units", "variant") == {("champion",): 400.0, ("challenger",): 400.0}


def test_a_failing_store_is_one_error_line_not_a_traceback(tmp_path: Path) -> None:
    """L1: a command reading a store that fails prints one line naming the store and exits 2."""
    (tmp_path / "shipml.yaml").write_text(CONFIG)
    (tmp_path / ".shipml").mkdir()
    store = PredictionStore(f"sqlite:///{tmp_path}/.shipml/predictions.db")
    try:
        log(store, "champion", labelled(40, 0.9))
        with store.database.engine.begin() as conn:  # the feedback table gone (a damaged or foreign database)
            conn.execute(sa.text("ALTER TABLE feedback RENAME TO feedback_away"))
    finally:
        store.close()

    done = shipml(tmp_path, "ab", "report", "--window", "1h")

    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == ["error: store: cannot read feedback: no such table: feedback"]
