"""The registry poll's interval is jittered (serve.reload_jitter), so replicas started together spread their polls
over a shared MLflow server; the back-off after failures is jittered the same way."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from shipml.adapters.registry import ModelRef
from shipml.config import ServeSettings
from shipml.server.model_manager import VariantManager


def _manager(**serve: Any) -> VariantManager:
    settings = ServeSettings(**serve)
    return VariantManager(ModelRef("churn", alias="production"), None, settings, Path("."), None)  # type: ignore[arg-type]


def test_polls_spread_within_the_jitter_around_the_interval() -> None:
    waits = [_manager(reload_interval_s=10.0)._next_poll_s() for _ in range(400)]  # one draw per "replica"
    print(f"FIGURE reload jitter 0.2 at 10 s: min={min(waits):.2f} max={max(waits):.2f} "
          f"stdev={statistics.stdev(waits):.2f}")  # fmt: skip
    assert all(8.0 <= w <= 12.0 for w in waits)
    assert max(waits) - min(waits) > 3.0  # spread over most of the ±2 s, not one value
    assert 9.5 < statistics.mean(waits) < 10.5
    assert len({round(w, 3) for w in waits}) > 350


def test_one_manager_draws_anew_at_each_poll() -> None:
    manager = _manager(reload_interval_s=1.0, reload_jitter=0.5)
    waits = [manager._next_poll_s() for _ in range(100)]
    assert all(0.5 <= w <= 1.5 for w in waits) and len(set(waits)) == 100


def test_no_jitter_is_the_interval_exactly() -> None:
    assert {_manager(reload_interval_s=3.0, reload_jitter=0.0)._next_poll_s() for _ in range(20)} == {3.0}


def test_the_back_off_after_failures_is_jittered_too() -> None:
    manager = _manager(reload_interval_s=1.0, reload_backoff_max_s=8.0, reload_jitter=0.25)
    manager._failures = 10  # capped at 8 s
    waits = [manager._next_poll_s() for _ in range(200)]
    assert all(6.0 <= w <= 10.0 for w in waits) and max(waits) - min(waits) > 2.0
