"""The monitoring job's feedback join: realised performance from the matured, labelled predictions of a window,
whatever else sits in the feedback table (M5: truth that is not a finite number is not truth)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from shipml.adapters.store import PredictionStore
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
