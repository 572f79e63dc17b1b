"""The monitoring job's estimated performance: read from the scores mapped by the recalibration recorded at
training, and, for a version trained before it was recorded, from the raw scores by the stated older rule."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from shipml.adapters.store import PredictionStore
from shipml.config import MonitorSettings
from shipml.core.calibration import Recalibration
from shipml.core.performance import PerformanceOptions, estimated_performance
from shipml.core.window import Window
from shipml.pipelines.monitor import MonitorJob, Version
from tests.support.logged import logged

T0 = 1_000_000.0
RECALIBRATION = Recalibration(slope=0.7, intercept=-0.2, calibration_error=0.01)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[PredictionStore]:
    s = PredictionStore(f"sqlite:///{tmp_path}/p.db")
    yield s
    s.close()


def classifier(evaluation: dict[str, Any]) -> Version:
    bundle = SimpleNamespace(
        schema=SimpleNamespace(target=SimpleNamespace(task="binary")), classes=("0", "1"), evaluation=evaluation
    )
    return Version(bundle, None, None, "1")  # type: ignore[arg-type]


def estimated(store: PredictionStore, evaluation: dict[str, Any]) -> tuple[dict[str, float | None], list[str]]:
    job = MonitorJob(MonitorSettings(min_labelled=10), store, None, Path("unused"))  # type: ignore[arg-type]
    notes: list[str] = []
    whole, _, _ = job._performance("churn", "1", "main", classifier(evaluation), Window(T0, T0 + 600), notes)
    return {p.estimate.metric: p.estimate.value for p in whole if p.estimate.kind == "estimated"}, notes


def test_estimates_read_the_recalibrated_scores_and_older_versions_the_raw_ones(store: PredictionStore) -> None:
    score = np.random.default_rng(0).uniform(0.02, 0.98, 300).round(6)
    rows = [
        logged(f"p-{i:04d}", T0 + i, "churn", "1", "main", {},
               {"predicted_class": "1" if s > 0.5 else "0", "probabilities": {"0": 1 - s, "1": s}}, 1.0)
        for i, s in enumerate(score.tolist())
    ]  # fmt: skip
    store.predictions.write([rows])
    holdout = {"accuracy": 0.8, "f1": 0.6, "roc_auc": 0.8, "calibration_error": 0.04}
    opts = PerformanceOptions(min_count=10)

    now, notes = estimated(store, {"holdout": holdout, "recalibration": RECALIBRATION.to_dict()})
    want = estimated_performance("binary", RECALIBRATION.apply(score), 0.01, score > 0.5, opts)
    assert now == {e.metric: e.value for e in want}
    assert notes == []

    before, notes = estimated(store, {"holdout": holdout})  # trained before the recalibration was recorded
    raw = estimated_performance("binary", score, 0.04, score > 0.5, opts)
    assert before == {e.metric: e.value for e in raw}
    assert notes[0].startswith("estimated performance reads the raw probabilities, gated by their holdout")
