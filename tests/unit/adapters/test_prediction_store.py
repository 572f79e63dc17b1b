from __future__ import annotations

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
