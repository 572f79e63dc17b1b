"""A unit of answered predictions logged as one row of columns (prediction_batches) reads back exactly like the same
predictions logged as rows."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shipml.adapters.store import PredictionStore, StoreWriter
from shipml.adapters.store.histograms import HistogramKeeper, HistogramLayout
from shipml.core.ids import Uuid7Generator
from shipml.core.prediction import Prediction, PredictionBatch, Role, Served, Truth
from tests.support.dialects import DIALECTS, store_uri_for
from tests.support.logged import batch_of
from tests.unit.adapters.test_histograms import profile as histogram_profile
from tests.unit.adapters.test_prediction_store import CHURNISH, schema_of

IDS = Uuid7Generator()


@pytest.fixture(params=DIALECTS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PredictionStore]:
    s = PredictionStore(store_uri_for(request, str(request.param), tmp_path))
    s.predictions.register_schema(CHURNISH)
    yield s
    s.close()


def records(n: int) -> list[dict[str, Any]]:
    contracts = ["monthly", "one-year", None, "Two-Year"]
    return [{"tenure": None if i % 7 == 3 else float(i), "contract": contracts[i % 4]} for i in range(n)]


def classifier_batch(n: int, ts: float = 1000.0, version: str = "1") -> list[Prediction]:
    probas = [[1 - i / n, i / n] for i in range(n)]
    return batch_of(
        IDS.strings(n), ts, "churn", version, "main", CHURNISH.sha256(), records(n), 2.5,
        labels=["1" if p[1] > p[0] else "0" for p in probas], classes=["0", "1"], proba=probas,
    )  # fmt: skip


def as_rows(batch: list[Prediction]) -> list[list[Prediction]]:
    """The same predictions as units of one: each logged as a row of ``predictions``."""
    return [[p] for p in batch]


def ids(batch: list[Prediction]) -> list[str]:
    return [p.id for p in batch]


def test_a_batch_reads_back_like_the_same_rows(store: PredictionStore, tmp_path: Path) -> None:
    batch = classifier_batch(300)
    store.predictions.write([batch])
    as_rows_store = PredictionStore(f"sqlite:///{tmp_path}/rows.db")
    as_rows_store.predictions.register_schema(CHURNISH)
    as_rows_store.predictions.write(as_rows(batch))
    got, want = store.predictions.read_window("churn", 0, 2000), as_rows_store.predictions.read_window("churn", 0, 2000)
    assert list(got.ids) == list(want.ids) == ids(batch)
    np.testing.assert_array_equal(got.features["tenure"], want.features["tenure"])
    assert list(got.features["contract"]) == list(want.features["contract"])
    assert got.kinds == want.kinds == {"tenure": "numeric", "contract": "categorical"}
    np.testing.assert_array_equal(got.score, want.score)
    assert list(got.label) == list(want.label)
    for prediction_id in (batch[0].id, batch[150].id, batch[-1].id):
        assert store.predictions.get(prediction_id) == as_rows_store.predictions.get(prediction_id)
    assert store.predictions.count() == as_rows_store.predictions.count() == 300
    assert store.predictions.count("churn", version="2") == 0
    as_rows_store.close()


def test_batches_and_rows_share_one_window_in_time_order(store: PredictionStore) -> None:
    early, late = classifier_batch(100, ts=1000.0), classifier_batch(80, ts=1002.0, version="2")
    middle = as_rows(classifier_batch(5, ts=1001.0))
    store.predictions.write([*middle, late, early])
    window = store.predictions.read_window("churn", 0, 2000)
    assert len(window) == 185 and list(window.ts) == sorted(window.ts)
    assert list(window.ids[:100]) == ids(early) and list(window.ids[105:]) == ids(late)
    assert len(store.predictions.read_window("churn", 0, 2000, version="2")) == 80
    assert len(store.predictions.read_window("churn", 1000.5, 1001.5)) == 5
    assert store.predictions.count("churn", since=1001.5) == 80


def test_feedback_joins_a_batched_prediction_and_unknown_ids_stay_unknown(store: PredictionStore) -> None:
    batch = classifier_batch(200)
    store.predictions.write([batch])
    assert store.feedback.add(batch[123].id, "1", None)
    assert store.feedback.get(batch[123].id) == Truth("1", None)
    # an id inside the batch's range but not one of its ids, and one from another time
    inside = batch[10].id[:-1] + ("0" if batch[10].id[-1] != "0" else "1")
    assert store.predictions.get(inside) is None and not store.feedback.add(inside, "1", None)
    assert store.predictions.get(IDS.strings(1)[0]) is None
    assert store.predictions.get("not-an-id") is None


def test_a_regression_batch_and_a_batch_of_an_unregistered_schema(store: PredictionStore) -> None:
    schema = schema_of(("tenure", "numeric"), ("contract", "categorical"), task="regression")
    store.predictions.register_schema(schema)
    values = [float(i) / 3 for i in range(70)]
    regression = batch_of(
        IDS.strings(70), 1000.0, "rent", "1", "main", schema.sha256(), records(70), 1.0, values=values
    )
    unknown = batch_of(IDS.strings(64), 1000.0, "other", "1", "main", "f" * 64, records(64), 1.0, values=values[:64])
    store.predictions.write([regression, unknown])
    window = store.predictions.read_window("rent", 0, 2000)
    assert list(window.score) == values and all(label is None for label in window.label)
    found, other = store.predictions.get(regression[5].id), store.predictions.get(unknown[5].id)
    assert found is not None and found.outputs() == {"value": values[5]}
    assert other is not None and other.features == records(64)[5]
    assert store.predictions.count("other") == 64


def test_the_writer_commits_batches_and_rows_together(store: PredictionStore) -> None:
    writer = StoreWriter(store, queue_size=1000, batch_max=1000)
    writer.enqueue(classifier_batch(500))
    writer.enqueue(classifier_batch(3))  # too few for a row of columns: rows
    writer.flush()
    writer.close()
    assert store.predictions.count() == 503


def columns_batch(n: int, ts: float = 1000.0) -> PredictionBatch:
    """A clean batch's answers as the service keeps them: columns, no Prediction per record."""
    recs = records(n)
    columns = {
        "tenure": np.array([np.nan if r["tenure"] is None else r["tenure"] for r in recs], dtype=np.float64),
        "contract": np.array([r["contract"] for r in recs], dtype=object),
    }
    proba = np.array([[1 - i / n, i / n] for i in range(n)])
    served = Served("churn", "1", "main", Role.PRIMARY, CHURNISH.sha256(), ("0", "1"))
    labels = ["1" if p1 > p0 else "0" for p0, p1 in proba.tolist()]
    keys = [f"k{i}" if i % 3 else None for i in range(n)]
    return PredictionBatch(IDS.strings(n), ts, served, range(n), columns, keys, 2.5, labels=labels, proba=proba)


def test_a_batch_of_columns_is_logged_and_counted_as_its_predictions(store: PredictionStore, tmp_path: Path) -> None:
    """The columnar /predict/batch path: one unit of columns, stored and binned as its predictions would be."""
    batch = columns_batch(300)
    made = batch.predictions()
    store.predictions.write([batch])
    as_rows_store = PredictionStore(f"sqlite:///{tmp_path}/rows.db")
    as_rows_store.predictions.register_schema(CHURNISH)
    as_rows_store.predictions.write([made])  # the same predictions, as the record-at-a-time path logs them
    got, want = store.predictions.read_window("churn", 0, 2000), as_rows_store.predictions.read_window("churn", 0, 2000)
    assert list(got.ids) == list(want.ids) == batch.ids
    np.testing.assert_array_equal(got.features["tenure"], want.features["tenure"])
    assert list(got.features["contract"]) == list(want.features["contract"])
    np.testing.assert_array_equal(got.score, want.score)
    assert list(got.label) == list(want.label)
    for k in (0, 1, 150, 299):
        assert store.predictions.get(batch.ids[k]) == as_rows_store.predictions.get(batch.ids[k])
    assert store.predictions.count() == 300
    as_rows_store.close()

    layout = HistogramLayout.of(histogram_profile(), "binary", "1")
    columnar, by_record = HistogramKeeper(), HistogramKeeper()
    for keeper, unit in ((columnar, batch), (by_record, made)):
        keeper.register("churn", "1", layout)
        keeper.observe([unit])
    [(_, minute, counted, _)] = columnar.collect()
    [(_, want_minute, want_counted, _)] = by_record.collect()
    assert minute == want_minute and counted.rows == want_counted.rows == 300
    np.testing.assert_array_equal(counted.counts, want_counted.counts)


def test_a_batch_of_columns_of_an_unregistered_schema_is_logged_as_rows(store: PredictionStore) -> None:
    batch = columns_batch(100)
    batch.served = Served("other", "1", "main", Role.PRIMARY, "f" * 64, ("0", "1"))
    store.predictions.write([batch])
    found = store.predictions.get(batch.ids[7])
    assert found is not None and found.features == records(100)[7] and found.key == "k7"
    assert store.predictions.count("other") == 100
