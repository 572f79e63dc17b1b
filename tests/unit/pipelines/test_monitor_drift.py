"""The monitoring job's drift series: each slice of the window judged as the whole window is (S4: the report's
slices inherited PSI's false alarms on many categories in small windows)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from shipml.adapters.store.histogram_table import MinuteCounts
from shipml.config import MonitorSettings
from shipml.core.binning import PREDICTION, ProfileBinnings, counts_of
from shipml.core.profile import ReferenceProfile, categorical_profile, numeric_profile
from shipml.core.window import Window
from shipml.pipelines.monitor import MonitorJob

T0 = 1_200_000.0


def test_clean_slices_of_a_hundred_categories_are_not_drift() -> None:
    """24 slices of 200 clean rows of a 100-category long tail: the series draws each feature's effect size and
    flags none of them (PSI on fixed thresholds flagged every one)."""
    rng = np.random.default_rng(61)
    categories = np.array([f"c{i:02d}" for i in range(100)], dtype=object)
    shares = 1.0 / np.arange(1, 101)
    shares /= shares.sum()
    profile = ReferenceProfile(
        10_000,
        {"x": numeric_profile(rng.normal(size=10_000))},
        {"tail": categorical_profile(pd.Series(rng.choice(categories, 10_000, p=shares)))},
        numeric_profile(rng.random(10_000)),
    )
    binnings = ProfileBinnings.of(profile)
    minutes = []
    for i in range(24):
        values = {"x": rng.normal(size=200), "tail": rng.choice(categories, 200, p=shares), PREDICTION: rng.random(200)}
        counts = {name: counts_of(b, values[name]) for name, b in binnings.all.items()}
        minutes.append(MinuteCounts(int(T0 // 60) + i, "1", "main", 200, counts))
    job = MonitorJob(MonitorSettings(), None, None, Path("unused"))  # type: ignore[arg-type]

    series = job._series(minutes, binnings, Window(T0, T0 + 24 * 60))

    tail = [p for p in series if p.feature == "tail"]
    assert len(tail) == 24 and {p.statistic for p in tail} == {"tvd"} and {p.rows for p in tail} == {200}
    assert {p.statistic for p in series if p.feature == "x"} == {"wasserstein"}
    assert sum(p.verdict == "drift" for p in series) <= 1
