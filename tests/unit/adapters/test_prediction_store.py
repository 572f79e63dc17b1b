from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from shipml.adapters.prediction_store import PredictionRow, PredictionStore, StoreFull, StoreWriter
from shipml.core.schema import FeatureSchema


def row(i: int, **features: object) -> PredictionRow:
    return PredictionRow(f"id-{i:04d}", time.time(), "churn", "1", "main", dict(features), {"p": 0.5}, 1.0)


@pytest.fixture
def store(tmp_path: Path, churn_df: pd.DataFrame) -> PredictionStore:
    s = PredictionStore(f"sqlite:///{tmp_path}/p.db")
    s.ensure_features(FeatureSchema.infer(churn_df, "churn", id_columns=("customer_id",)))
    return s


def test_rows_land_with_typed_feature_columns_and_wal(store: PredictionStore) -> None:
    store.write([row(1, tenure=3.0, contract="one-year"), row(2, tenure=None, contract=None)])
    got = store.get("id-0001")
    assert got is not None and got["f_tenure"] == 3.0 and got["f_contract"] == "one-year"
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    assert store.count() == 2


def test_feedback_joins_by_id_and_unknown_id_is_refused(store: PredictionStore) -> None:
    store.write([row(1, tenure=1.0)])
    assert store.add_feedback("id-0001", "1", None)
    assert store.add_feedback("id-0001", "0", None)  # later feedback replaces earlier
    assert not store.add_feedback("nope", "1", None)
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT prediction_id, label FROM feedback").all() == [("id-0001", "0")]


def test_writer_commits_in_batches_and_flushes_on_close(store: PredictionStore) -> None:
    writer = StoreWriter(store, queue_size=1000, batch_max=64)
    futures = [writer.submit(row(i, tenure=float(i))) for i in range(300)]
    for f in futures:
        f.result(timeout=10)
    writer.submit_many([row(1000 + i) for i in range(5)])
    writer.close()
    assert store.count() == 305


def test_full_queue_sheds_at_once(store: PredictionStore) -> None:
    release = threading.Event()
    original = store.write

    def slow(rows: list[PredictionRow]) -> None:
        release.wait(10)
        original(rows)

    store.write = slow  # type: ignore[method-assign]
    writer = StoreWriter(store, queue_size=2, batch_max=1)
    writer.submit(row(1))
    time.sleep(0.2)  # the writer holds row 1; the queue is empty again
    writer.submit(row(2))
    writer.submit(row(3))
    with pytest.raises(StoreFull):
        writer.submit(row(4))
    release.set()
    writer.close()
    assert store.count() == 3


def test_write_failure_reaches_the_waiting_caller(store: PredictionStore) -> None:
    errors: list[BaseException] = []

    def broken(rows: list[PredictionRow]) -> None:
        raise RuntimeError("disk gone")

    store.write = broken  # type: ignore[method-assign]
    writer = StoreWriter(store, queue_size=10, batch_max=10, on_error=errors.append)
    fut = writer.submit(row(1))
    with pytest.raises(Exception, match="prediction log write failed"):
        fut.result(timeout=10)
    assert len(errors) == 1
    writer.close()


@pytest.mark.parametrize("n", [1, 13, 1000, 2600])
def test_a_batch_of_any_size_lands_whole_with_its_values(store: PredictionStore, n: int) -> None:
    store.write([row(i, tenure=float(i), contract="one-year" if i % 2 else None) for i in range(n)])
    assert store.count() == n
    last = store.get(f"id-{n - 1:04d}")
    assert last is not None
    assert last["f_tenure"] == float(n - 1)
    assert last["f_contract"] == ("one-year" if (n - 1) % 2 else None)


def test_an_event_loop_waits_for_the_commit_of_its_rows(store: PredictionStore) -> None:
    writer = StoreWriter(store, queue_size=1000, batch_max=512, window_ms=0.4)

    async def predict_and_log() -> list[int]:
        waits = [writer.submit_waitable([row(i, tenure=float(i))]) for i in range(50)]
        await asyncio.gather(*waits)
        return [store.count()]

    assert asyncio.run(predict_and_log()) == [50]  # every row committed before the callers go on
    writer.close()


def test_two_stores_on_one_sqlite_file_take_turns_as_worker_processes_do(
    tmp_path: Path, churn_df: pd.DataFrame
) -> None:
    schema = FeatureSchema.infer(churn_df, "churn", id_columns=("customer_id",))
    stores = [PredictionStore(f"sqlite:///{tmp_path}/shared.db") for _ in range(2)]
    for s in stores:
        s.ensure_features(schema)

    def write_many(s: PredictionStore, offset: int) -> None:
        for i in range(100):
            s.write([row(offset + 2 * i, tenure=1.0), row(offset + 2 * i + 1, tenure=2.0)])

    threads = [threading.Thread(target=write_many, args=(s, k * 1000)) for k, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert stores[0].count() == 400
    assert (tmp_path / "shared.db.writelock").exists()
    for s in stores:
        s.close()
