"""The registry poll's interval is jittered (serve.reload_jitter), so replicas started together spread their polls
over a shared MLflow server; the back-off after failures is jittered the same way. A first load that failed in the
store, not the registry, is retried within seconds."""

from __future__ import annotations

import asyncio
import statistics
from pathlib import Path
from typing import Any

from shipml.adapters.registry import ModelRef
from shipml.adapters.store import PredictionStore
from shipml.config import ServeSettings
from shipml.errors import StoreError
from shipml.server.metrics import ServerMetrics
from shipml.server.model_manager import STORE_RETRY_S, VariantManager
from tests.support.project import TrainedProject


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


def test_a_first_load_failed_by_the_store_retries_within_seconds_without_the_registrys_back_off(
    trained_project: TrainedProject, tmp_path: Path
) -> None:
    """The store down when a worker first loads its model (register_schema fails): the worker is not ready, counts a
    load failure with reason "store", and polls again within STORE_RETRY_S (jittered) instead of reload_interval_s
    doubled; once the store answers, the next poll loads the model and the registry's interval is back."""
    store = PredictionStore(f"sqlite:///{tmp_path}/p.db")
    register = store.predictions.register_schema
    down = [True]

    def flaky_register(schema: Any) -> Any:
        if down[0]:
            raise StoreError("the prediction store is unavailable: connection refused")
        return register(schema)

    store.predictions.register_schema = flaky_register  # type: ignore[method-assign]
    metrics = ServerMetrics()
    manager = VariantManager(
        ModelRef("churn", alias="production"), trained_project.registry(), ServeSettings(reload_interval_s=30.0),
        tmp_path / "cache", metrics, store,
    )  # fmt: skip
    failed = asyncio.run(manager.reload())
    assert not failed.changed and not manager.ready
    assert metrics.load_failures.labels("churn", "store")._value.get() == 1
    assert all(0.0 < manager._next_poll_s() <= STORE_RETRY_S * 1.2 for _ in range(50))
    down[0] = False
    loaded = asyncio.run(manager.reload())
    assert loaded.changed and manager.ready
    assert all(24.0 <= manager._next_poll_s() <= 36.0 for _ in range(50))
    store.close()
