"""The service path without HTTP: a full prediction log sheds load with 503, a failed commit is 503 too."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shipml.adapters.registry import VersionInfo
from shipml.adapters.store import PredictionStore, StoreWriter
from shipml.core.model import build_pipeline, make_estimator
from shipml.core.prediction import Prediction, Record
from shipml.core.predictor import PipelinePredictor
from shipml.core.records import RecordValidator
from shipml.core.routing import Shadow, Split
from shipml.core.schema import FeatureSchema
from shipml.errors import StoreError, StoreFull
from shipml.examples.churn import generate_churn
from shipml.pipelines.bundle import ModelBundle
from shipml.pipelines.data import feature_frame
from shipml.pipelines.fast_path import rows_from_frame
from shipml.server.errors import to_api_error
from shipml.server.metrics import ServerMetrics
from shipml.server.model_manager import Deployment, Variant
from shipml.server.predictions import PredictionService


def deployment(n_rows: int = 3) -> tuple[Deployment, list[Record]]:
    """A one-variant deployment of a pipeline and ``n_rows`` records of its data, without routing keys."""
    variant, rows = pipeline_variant(n_rows)
    return Deployment((variant,)), [Record(r) for r in rows]


def pipeline_variant(n_rows: int = 3) -> tuple[Variant, list[dict[str, object]]]:
    df = generate_churn(max(300, n_rows), seed=2)
    schema = FeatureSchema.infer(df, "churn", id_columns=("customer_id",))
    pipeline = build_pipeline(schema, make_estimator("sklearn.linear_model.LogisticRegression", {}, "binary", 0))
    pipeline.fit(feature_frame(df, schema), df.churn)
    info = VersionInfo("churn", "1", "run", datetime.now(UTC), (), {})
    rows = rows_from_frame(feature_frame(df.head(n_rows), schema), schema)
    bundle = ModelBundle(info, schema, None, PipelinePredictor(pipeline, schema), pipeline, tuple(rows), {})
    return Variant(bundle, RecordValidator(schema)), rows  # type: ignore[arg-type]


class FullWriter:
    def reserve(self, n_rows: int) -> None:
        raise StoreFull("full")  # the queue has no room for the batch


class FailingWriter:
    def reserve(self, n_rows: int) -> None:
        pass

    def release(self, n_rows: int) -> None:
        pass

    def submit_waitable(self, rows: list[Prediction], *, reserved: bool = False) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.set_exception(StoreError("disk gone"))
        return fut


@pytest.mark.parametrize(
    ("writer", "durability", "code"),
    [(FullWriter(), "async", "overloaded"), (FailingWriter(), "commit", "store_unavailable")],
)
def test_log_trouble_is_a_503_not_a_silent_loss(writer: object, durability: str, code: str) -> None:
    dep, rows = deployment()
    metrics = ServerMetrics()
    service = PredictionService(writer, durability, metrics)  # type: ignore[arg-type]
    with pytest.raises(StoreError) as info:
        asyncio.run(service.run(dep, rows))
    answer = to_api_error(info.value)
    assert (answer.status, answer.code) == (503, code)


def test_records_come_back_in_order_with_errors_in_place() -> None:
    dep, rows = deployment()
    service = PredictionService(None, "commit", ServerMetrics())
    results = asyncio.run(service.run(dep, [rows[0], Record({"tenure": "x"}), rows[2]]))
    assert [r.index for r in results] == [0, 1, 2]
    assert results[0].ok and not results[1].ok and results[2].ok
    assert results[0].id != results[2].id


class HangingPredictor:
    """A model call that hangs until released, as a stuck native library or a deadlocked pipeline would."""

    name = "pipeline"
    inline_max_rows = 0
    batching_pays = False

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.release = threading.Event()
        self.returned = threading.Event()

    def predict(self, rows: list[dict[str, object]]) -> object:
        self.release.wait(60)
        self.returned.set()
        return self.inner.predict(rows)  # type: ignore[attr-defined]


def test_a_hanging_model_call_is_a_504_and_the_next_call_is_served() -> None:
    variant, rows = pipeline_variant()
    hanging = HangingPredictor(variant.bundle.predictor)
    slow = Deployment((dataclasses.replace(variant, bundle=dataclasses.replace(variant.bundle, predictor=hanging)),))
    records = [Record(r) for r in rows]
    service = PredictionService(None, "commit", ServerMetrics(), timeout_s=0.3)
    with pytest.raises(TimeoutError) as info:
        asyncio.run(service.run(slow, records))
    assert not hanging.returned.is_set()  # answered while the call still hangs, not when it returned
    answer = to_api_error(info.value)
    assert (answer.status, answer.code) == (504, "timeout")
    hanging.release.set()
    assert all(r.ok for r in asyncio.run(service.run(slow, records)))


def test_a_batch_bigger_than_a_chunk_is_logged_whole_when_the_queue_is_small(tmp_path: Path) -> None:
    """Room is reserved for the whole batch at once: no 503 after its first chunks were logged (review L4)."""
    dep, rows = deployment(3000)  # two chunks of the service, a queue of 100 rows
    store = PredictionStore(f"sqlite:///{tmp_path}/p.db")
    writer = StoreWriter(store, queue_size=100, batch_max=512)
    try:
        results = asyncio.run(PredictionService(writer, "async", ServerMetrics()).run(dep, rows))
        writer.flush()
        assert all(r.ok for r in results) and store.predictions.count() == 3000
        assert writer.pending == 0
    finally:
        writer.close()
        store.close()


def split_deployment(n_rows: int, shadow: bool = False) -> tuple[Deployment, list[dict[str, object]]]:
    """Two variants of one pipeline, 50/50 by routing key, and optionally a shadow scoring every record."""
    variant, rows = pipeline_variant(n_rows)
    a, b = (dataclasses.replace(variant, variant=name) for name in ("a", "b"))
    shadows = ((dataclasses.replace(variant, variant="candidate", role="shadow"), Shadow("candidate", 1.0)),)
    split = Split([("a", 0.5), ("b", 0.5)], "salt")
    return Deployment((a, b), split, shadows if shadow else (), "salt"), rows


def test_a_request_split_across_variants_is_logged_whole_or_refused_whole(tmp_path: Path) -> None:
    """Review L2: room is reserved once for the whole request, never per variant, so a request is never answered
    503 after some of its records were logged."""
    dep, rows = split_deployment(8)
    keys = [f"k{i}" for i in range(40)]
    lopsided = [k for k in keys if dep.split is not None and dep.split.variant(k) == "a"][:6]
    lopsided += [k for k in keys if dep.split is not None and dep.split.variant(k) == "b"][:2]
    store = PredictionStore(f"sqlite:///{tmp_path}/p.db")
    writer = StoreWriter(store, queue_size=6, batch_max=512, window_ms=50)
    service = PredictionService(writer, "async", ServerMetrics())
    try:
        answered = asyncio.run(service.run(dep, [Record(r, k) for r, k in zip(rows, lopsided, strict=True)]))
        writer.flush()
        assert [p.served.variant for p in answered] == ["a"] * 6 + ["b"] * 2
        assert store.predictions.count() == 8  # the whole request, although the queue holds 6
    finally:
        writer.close()
        store.close()


def test_a_request_routed_as_a_whole_is_answered_by_its_variant_logged_with_its_key_and_shadowed(
    tmp_path: Path,
) -> None:
    """/invocations and /v2 infer: one variant answers the request (routed by its key, or named by the path),
    every record is logged with the request's key, and the shadows get their copies as /predict's do."""
    dep, rows = split_deployment(5, shadow=True)
    store = PredictionStore(f"sqlite:///{tmp_path}/p.db")
    writer = StoreWriter(store, queue_size=1000, batch_max=512)
    service = PredictionService(writer, "commit", ServerMetrics())

    async def traffic() -> list[Prediction]:
        variant, routed = service.route(dep, "customer-7")
        assert routed is not None and variant.variant == dep.split.variant("customer-7")  # type: ignore[union-attr]
        answered = await service.run(dep, [Record(r, "customer-7") for r in rows], variant=variant)
        await service.close()  # the shadow's queued copies are scored before it returns
        return answered

    try:
        answered = asyncio.run(traffic())
        writer.flush()
        assert {p.served.variant for p in answered} == {dep.split.variant("customer-7")}  # type: ignore[union-attr]
        logged = store.predictions.read_outcomes("churn", 0, time.time() + 1).keys
        assert logged.tolist() == ["customer-7"] * 5
        copies = store.predictions.read_outcomes("churn", 0, time.time() + 1, role="shadow").keys
        assert copies.tolist() == ["customer-7"] * 5
    finally:
        writer.close()
        store.close()
