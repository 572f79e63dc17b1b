"""The monitoring job's feedback join: realised performance from the matured, labelled predictions of a window,
whatever else sits in the feedback table (M5: truth that is not a finite number is not truth)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa

from shipml.adapters.store import PredictionStore, tables
from shipml.config import MonitorSettings
from shipml.core.window import Window
from shipml.pipelines.monitor import MonitorJob, Version
from tests.support.dialects import DIALECTS, store_uri_for
from tests.support.logged import logged

T0 = 1_000_000.0  # long matured


@pytest.fixture(params=DIALECTS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PredictionStore]:
    s = PredictionStore(store_uri_for(request, str(request.param), tmp_path))
    yield s
    s.close()


def regressor() -> Version:
    """A registered regression version as the job sees it (its holdout rmse and mae)."""
    bundle = SimpleNamespace(
        schema=SimpleNamespace(target=SimpleNamespace(task="regression")),
        classes=(),
        evaluation={"holdout": {"rmse": 1.0, "mae": 1.0}},
    )
    return Version(bundle, None, None, None)  # type: ignore[arg-type]


def test_non_finite_regression_truth_is_left_out_of_realised_performance(store: PredictionStore) -> None:
    """One NaN or infinite feedback value (a json.dumps of a missing target, an overflowing number logged before
    /feedback refused them) must not turn the window's rmse and mae into NaN or inf: the drop alarm would be off."""
    rows = [logged(f"r-{i:04d}", T0 + i, "rent", "1", "main", {}, {"value": 10.0}, 1.0) for i in range(200)]
    store.predictions.write([rows])
    for i in range(200):
        assert store.feedback.add(f"r-{i:04d}", None, 10.5)
    for pid, bad in (("r-0000", math.nan), ("r-0001", math.inf), ("r-0002", -math.inf)):
        assert store.feedback.add(pid, None, bad)
    job = MonitorJob(MonitorSettings(min_labelled=10), store, None, Path("unused"))  # type: ignore[arg-type]

    whole, _, labels = job._performance("rent", "1", "main", regressor(), Window(T0, T0 + 300), [])

    realised = {p.estimate.metric: p.estimate for p in whole if p.estimate.kind == "realised"}
    assert realised["rmse"].value == pytest.approx(0.5) and realised["mae"].value == pytest.approx(0.5)
    assert realised["rmse"].count == 197
    assert labels["labelled"] == 197


def _feedback_reads(store: PredictionStore) -> list[tuple[str, Any]]:
    """Record every statement that reads the feedback table (its SQL and parameters) from now on."""
    seen: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM feedback" in statement:
            seen.append((statement, parameters))

    sa.event.listen(store.database.engine, "before_cursor_execute", record)
    return seen


def _plan(store: PredictionStore, statement: str, parameters: Any) -> str:
    """The database's plan of one recorded statement, as text."""
    explain = "EXPLAIN QUERY PLAN " if store.database.is_sqlite else "EXPLAIN "
    with store.database.engine.connect() as conn:
        if not store.database.is_sqlite:
            conn.exec_driver_sql("ANALYZE feedback")
        rows = conn.exec_driver_sql(explain + statement, parameters).all()
    return " | ".join(str(r[-1]) for r in rows)


def test_the_feedback_outside_the_window_is_never_read(store: PredictionStore) -> None:
    """M6: the job reads the feedback of its window's predictions by id (an index lookup), not every feedback
    row recorded since the window opened: 20,000 rows of feedback of other windows and models sit in the table,
    and the outcome is the same as the whole table's join."""
    inside = [
        logged(f"in-{i:04d}", T0 + i, "rent", "1", "main", {}, {"value": 10.0}, 1.0) for i in range(200)
    ]  # fmt: skip
    later = [logged(f"late-{i:04d}", T0 + 400 + i, "rent", "1", "main", {}, {"value": 10.0}, 1.0) for i in range(50)]
    store.predictions.write([inside, later])
    for p in (*inside[:150], *later):
        assert store.feedback.add(p.id, None, 10.5)
    with store.database.engine.begin() as conn:  # feedback of other models, all recorded after the window opened
        conn.execute(
            sa.insert(tables.feedback),
            [{"prediction_id": f"other-{i:05d}", "ts": T0 + i, "label": None, "value": 1.0} for i in range(20_000)],
        )
    job = MonitorJob(MonitorSettings(min_labelled=10), store, None, Path("unused"))  # type: ignore[arg-type]
    reads = _feedback_reads(store)

    whole, _, labels = job._performance("rent", "1", "main", regressor(), Window(T0, T0 + 300), [])

    assert labels == {"pending": 50, "matured": 200, "labelled": 150}
    realised = {p.estimate.metric: p.estimate for p in whole if p.estimate.kind == "realised"}
    assert realised["mae"].value == pytest.approx(0.5) and realised["mae"].count == 150
    assert reads, "the job read no feedback"
    for statement, parameters in reads:
        plan = _plan(store, statement, parameters)
        if store.database.is_sqlite:
            assert "SEARCH feedback" in plan and "SCAN feedback" not in plan, plan
        else:
            assert "Index" in plan and "Seq Scan" not in plan, plan
        assert "prediction_id" in statement.split("WHERE", 1)[-1], statement
    assert set(store.feedback.read(p.id for p in (*inside, *later))) == {p.id for p in (*inside[:150], *later)}
