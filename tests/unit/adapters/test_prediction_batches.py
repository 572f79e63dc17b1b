"""A batch request's chunk logged as one PredictionBatch reads back exactly like the same predictions logged as rows."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shipml.adapters.store import PredictionBatch, PredictionRow, PredictionStore, StoreWriter
from shipml.core.ids import Uuid7Generator
from tests.support.dialects import DIALECTS, store_uri_for
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


def classifier_batch(n: int, ts: float = 1000.0, version: str = "1") -> PredictionBatch:
    probas = [[1 - i / n, i / n] for i in range(n)]
    return PredictionBatch(
        IDS.strings(n), ts, "churn", version, "main", CHURNISH.sha256(), records(n), 2.5,
        labels=["1" if p[1] > p[0] else "0" for p in probas], classes=["0", "1"], proba=probas,
    )  # fmt: skip


def as_rows(batch: PredictionBatch) -> list[PredictionRow]:
    assert batch.proba is not None and batch.labels is not None
    return [
        PredictionRow(
            batch.ids[i], batch.ts, batch.model, batch.version, batch.variant, batch.features[i],
            {"predicted_class": batch.labels[i], "probabilities": dict(zip(["0", "1"], batch.proba[i], strict=True))},
            batch.latency_ms, schema_sha256=batch.schema_sha256,
        )
        for i in range(len(batch))
    ]  # fmt: skip


def test_a_batch_reads_back_like_the_same_rows(store: PredictionStore, tmp_path: Path) -> None:
    batch = classifier_batch(300)
    store.predictions.write([], [batch])
    as_rows_store = PredictionStore(f"sqlite:///{tmp_path}/rows.db")
    as_rows_store.predictions.register_schema(CHURNISH)
    as_rows_store.predictions.write(as_rows(batch))
    got, want = store.predictions.read_window("churn", 0, 2000), as_rows_store.predictions.read_window("churn", 0, 2000)
    assert list(got.ids) == list(want.ids) == list(batch.ids)
    np.testing.assert_array_equal(got.features["tenure"], want.features["tenure"])
    assert list(got.features["contract"]) == list(want.features["contract"])
    assert got.kinds == want.kinds == {"tenure": "numeric", "contract": "categorical"}
    np.testing.assert_array_equal(got.score, want.score)
    assert list(got.label) == list(want.label)
    for prediction_id in (batch.ids[0], batch.ids[150], batch.ids[-1]):
        assert store.predictions.get(prediction_id) == as_rows_store.predictions.get(prediction_id)
    assert store.predictions.count() == as_rows_store.predictions.count() == 300
    assert store.predictions.count("churn", version="2") == 0
    as_rows_store.close()


def test_batches_and_rows_share_one_window_in_time_order(store: PredictionStore) -> None:
    early, late = classifier_batch(100, ts=1000.0), classifier_batch(80, ts=1002.0, version="2")
    middle = as_rows(classifier_batch(5, ts=1001.0))
    store.predictions.write(middle, [late, early])
    window = store.predictions.read_window("churn", 0, 2000)
    assert len(window) == 185 and list(window.ts) == sorted(window.ts)
    assert list(window.ids[:100]) == list(early.ids) and list(window.ids[105:]) == list(late.ids)
    assert len(store.predictions.read_window("churn", 0, 2000, version="2")) == 80
    assert len(store.predictions.read_window("churn", 1000.5, 1001.5)) == 5
    assert store.predictions.count("churn", since=1001.5) == 80


def test_feedback_joins_a_batched_prediction_and_unknown_ids_stay_unknown(store: PredictionStore) -> None:
    batch = classifier_batch(200)
    store.predictions.write([], [batch])
    assert store.feedback.add(batch.ids[123], "1", None)
    assert store.feedback.get(batch.ids[123]) == {"ts": pytest.approx(time.time(), abs=60), "label": "1", "value": None}
    # an id inside the batch's range but not one of its ids, and one from another time
    inside = batch.ids[10][:-1] + ("0" if batch.ids[10][-1] != "0" else "1")
    assert store.predictions.get(inside) is None and not store.feedback.add(inside, "1", None)
    assert store.predictions.get(IDS.strings(1)[0]) is None
    assert store.predictions.get("not-an-id") is None


def test_a_regression_batch_and_a_batch_of_an_unregistered_schema(store: PredictionStore) -> None:
    schema = schema_of(("tenure", "numeric"), ("contract", "categorical"), task="regression")
    store.predictions.register_schema(schema)
    values = [float(i) / 3 for i in range(70)]
    regression = PredictionBatch(
        IDS.strings(70), 1000.0, "rent", "1", "main", schema.sha256(), records(70), 1.0, values=values
    )
    unknown = PredictionBatch(
        IDS.strings(64), 1000.0, "other", "1", "main", "f" * 64, records(64), 1.0, values=values[:64]
    )
    store.predictions.write([], [regression, unknown])
    window = store.predictions.read_window("rent", 0, 2000)
    assert list(window.score) == values and all(label is None for label in window.label)
    assert store.predictions.get(regression.ids[5])["outputs"] == {"value": values[5]}  # type: ignore[index]
    assert store.predictions.get(unknown.ids[5])["features"] == records(64)[5]  # type: ignore[index]
    assert store.predictions.count("other") == 64


def test_the_writer_commits_batches_and_rows_together(store: PredictionStore) -> None:
    writer = StoreWriter(store, queue_size=1000, batch_max=1000)
    writer.enqueue(classifier_batch(500))
    writer.enqueue(as_rows(classifier_batch(3)))
    writer.flush()
    writer.close()
    assert store.predictions.count() == 503
