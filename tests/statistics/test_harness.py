"""The harness itself: the Monte-Carlo margin and the scale are what the simulations' assertions rest on."""

from __future__ import annotations

import numpy as np
import pytest

from tests.statistics.conftest import figure, mc_margin, replicates, scale


def test_the_margin_holds_a_true_rate_in_nearly_every_run(rng: np.random.Generator) -> None:
    """A coin with p = 0.05 flipped R times lands within goal + margin in at least 99.5 % of 2,000 runs."""
    r, goal = 400, 0.05
    rates = rng.binomial(r, goal, size=2_000) / r
    inside = float(np.mean(rates <= goal + mc_margin(goal, r)))
    figure("harness", replicates=r, goal=goal, inside=inside)
    assert inside >= 0.995


def test_the_scale_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIPML_STATS_SCALE", "10")
    assert scale() == 10.0
    assert replicates(40) == 400
    monkeypatch.setenv("SHIPML_STATS_SCALE", "zero")
    with pytest.raises(pytest.UsageError, match="SHIPML_STATS_SCALE"):
        scale()
