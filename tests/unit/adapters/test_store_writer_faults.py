"""The prediction log's writer when commits fail: idempotent inserts, async retries, rows shed counted in rows, and
a request that never waits on a commit longer than ``store.timeout_s``."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
import sqlalchemy as sa

from shipml.adapters.store import PredictionStore, StoreWriter
from shipml.core.prediction import Prediction
from shipml.errors import StoreError
from shipml.server.errors import to_api_error
from shipml.server.metrics import ServerMetrics
from shipml.server.predictions import PredictionService
from tests.support.dialects import DIALECTS, store_uri_for
from tests.support.logged import logged
from tests.unit.test_prediction_service import deployment


@pytest.fixture(params=DIALECTS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PredictionStore]:
    s = PredictionStore(store_uri_for(request, request.param, tmp_path))
    yield s
    s.close()


def rows(n: int, prefix: str = "r") -> list[Prediction]:
    return [
        logged(f"{prefix}-{i}", float(i), "churn", "1", "main", {"tenure": float(i)}, {"predicted_class": "1"}, 0.5)
        for i in range(n)
    ]


def test_a_commit_written_twice_stores_each_row_once(store: PredictionStore) -> None:
    """A retry of a commit whose first attempt did commit (its answer lost on the way) is not an error."""
    unit = rows(5)
    store.predictions.write([unit])
    store.predictions.write([unit])
    assert store.predictions.count() == 5


def wait_for(done: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, "not within 30 s"
        time.sleep(0.02)


class Flaky:
    """``predictions.write`` failing its first ``failures`` calls (the first one after committing, as a
    connection lost after COMMIT was sent), then the real one."""

    def __init__(self, store: PredictionStore, failures: int) -> None:
        self.real = store.predictions.write
        self.failures = failures
        self.calls = 0

    def __call__(self, units: Sequence[Sequence[Prediction]]) -> None:
        self.calls += 1
        if self.calls == 1:
            self.real(units)
        if self.calls <= self.failures:
            raise sa.exc.OperationalError("INSERT", {}, Exception("server closed the connection unexpectedly"))
        self.real(units)


def test_async_rows_of_a_failed_commit_are_retried_not_lost(store: PredictionStore) -> None:
    flaky = Flaky(store, failures=5)  # the first two attempts and three retries fail
    store.predictions.write = flaky  # type: ignore[method-assign]
    dropped: list[int] = []
    writer = StoreWriter(store, queue_size=1000, batch_max=512, on_dropped=dropped.append, retry_s=10.0)
    writer.enqueue(rows(7))
    wait_for(lambda: flaky.calls >= 6)
    writer.close()
    assert flaky.calls == 6
    assert store.predictions.count() == 7 and dropped == []


def test_async_rows_are_dropped_and_counted_in_rows_after_the_retry_time(store: PredictionStore) -> None:
    flaky = Flaky(store, failures=1000)
    store.predictions.write = flaky  # type: ignore[method-assign]
    dropped: list[int] = []
    errors: list[BaseException] = []
    writer = StoreWriter(
        store, queue_size=1000, batch_max=512, on_dropped=dropped.append, on_error=errors.append, retry_s=0.5
    )
    writer.enqueue(rows(7, "a"))
    writer.enqueue(rows(3, "b"))
    wait_for(lambda: sum(dropped) >= 10)
    writer.close()
    # the first attempt committed (in doubt): its rows are in the store although counted as dropped
    assert sum(dropped) == 10 and len(errors) == 1


def test_a_waiter_gets_the_error_at_once_while_the_rows_nobody_waits_for_are_retried(store: PredictionStore) -> None:
    flaky = Flaky(store, failures=3)
    store.predictions.write = flaky  # type: ignore[method-assign]
    writer = StoreWriter(store, queue_size=1000, batch_max=512, window_ms=50, retry_s=10.0)
    writer.enqueue(rows(4, "async"))
    waited = writer.submit_many(rows(2, "commit"))
    with pytest.raises(StoreError):
        waited.result(timeout=30)
    wait_for(lambda: flaky.calls >= 4)
    writer.close()
    assert store.predictions.count() == 6  # the waiter's rows are in doubt: the first attempt committed them


class StuckWriter:
    """A writer whose commits never finish (a database that stopped answering)."""

    def __init__(self) -> None:
        self.released = threading.Event()

    def reserve(self, n_rows: int) -> None:
        pass

    def release(self, n_rows: int) -> None:
        pass

    def submit_waitable(self, rows: list[Prediction], *, reserved: bool = False) -> asyncio.Future[None]:
        return asyncio.get_running_loop().create_future()  # never resolved


def test_a_commit_that_does_not_come_is_a_503_after_store_timeout() -> None:
    dep, records = deployment()
    service = PredictionService(StuckWriter(), "commit", ServerMetrics(), store_timeout_s=0.3)  # type: ignore[arg-type]

    async def run() -> None:
        await asyncio.wait_for(service.run(dep, records), 10)

    with pytest.raises(StoreError) as info:
        asyncio.run(run())
    answer = to_api_error(info.value)
    assert (answer.status, answer.code) == (503, "store_unavailable")
    assert "store.timeout_s" in str(info.value)
