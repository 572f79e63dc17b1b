"""Shadow variants off the response path (server/shadows.py): copies queued by the request, scored in batches
by one task per shadow, timeouts and full queues counted, and a stop that scores or drops, never hangs."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from shipml.adapters.registry import VersionInfo
from shipml.adapters.store import PredictionStore, StoreWriter
from shipml.core.fast.compile import compile_pipeline
from shipml.core.model import build_pipeline, make_estimator
from shipml.core.prediction import Record
from shipml.core.records import RecordValidator
from shipml.core.routing import Shadow
from shipml.core.schema import FeatureSchema
from shipml.examples.churn import generate_churn
from shipml.pipelines.bundle import ModelBundle
from shipml.pipelines.data import feature_frame
from shipml.pipelines.fast_path import rows_from_frame
from shipml.server.metrics import ServerMetrics
from shipml.server.model_manager import Deployment, Variant
from shipml.server.predictions import PredictionService
from shipml.server.shadows import ShadowQueue

SHADOW = "candidate"


@dataclasses.dataclass
class Setup:
    store: PredictionStore
    primary: Variant
    shadow: Variant
    rows: list[dict[str, object]]

    def deployment(self, shadow: Variant | None = None) -> Deployment:
        return Deployment((self.primary,), None, ((shadow or self.shadow, Shadow(SHADOW, 1.0)),), "salt")


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    """A champion and a shadow of the same fast model (answers on the event loop, as the bench's), one store."""
    df = generate_churn(300, seed=3)
    schema = FeatureSchema.infer(df, "churn", id_columns=("customer_id",))
    pipeline = build_pipeline(schema, make_estimator("sklearn.linear_model.LogisticRegression", {}, "binary", 0))
    pipeline.fit(feature_frame(df, schema), df.churn)
    rows = rows_from_frame(feature_frame(df, schema), schema)
    info = VersionInfo("churn", "1", "run", datetime.now(UTC), (), {})
    bundle = ModelBundle(info, schema, None, compile_pipeline(pipeline, schema), None, tuple(rows[:3]), {})  # type: ignore[arg-type]
    store = PredictionStore(f"sqlite:///{tmp_path}/p.db")
    sha = store.predictions.register_schema(schema).schema_sha256
    validator = RecordValidator(schema)
    primary = Variant(bundle, validator, "main", sha)
    shadow = Variant(bundle, validator, SHADOW, sha, role="shadow")
    try:
        yield Setup(store, primary, shadow, rows)  # type: ignore[arg-type]
    finally:
        store.close()


def counted(metrics: ServerMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, {"model": "churn", **labels}) or 0.0


async def until(condition: object, within_s: float = 30.0) -> None:
    """Let the loop run until ``condition()`` holds (a bound against hanging, not a timing assertion)."""
    deadline = time.monotonic() + within_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "the shadow never got there"
        await asyncio.sleep(0.01)


class HangingPredictor:
    """The shadow's model call hangs until released (it runs in a worker thread: inline_max_rows 0)."""

    name = "pipeline"
    inline_max_rows = 0
    batching_pays = False

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.release = threading.Event()

    def predict(self, rows: list[dict[str, object]]) -> object:
        self.release.wait(60)
        return self.inner.predict(rows)  # type: ignore[attr-defined]


def test_answers_come_first_and_the_copies_are_scored_in_one_batch_logged_with_their_keys(setup: Setup) -> None:
    writer = StoreWriter(setup.store, queue_size=10_000, batch_max=512)
    metrics = ServerMetrics()
    service = PredictionService(writer, "async", metrics)
    keys = [f"user-{i}" for i in range(100)]

    async def traffic() -> None:
        for i, key in enumerate(keys):  # back to back: nothing here waits, so the drainer has not run yet
            answer = await service.run(setup.deployment(), [Record(setup.rows[i], key)])
            assert answer[0].ok and answer[0].served.variant == "main"  # the champion answered, never the shadow
        refused = await service.run(setup.deployment(), [Record({"tenure": "x"}, "bad")])
        assert not refused[0].ok
        assert service.shadows.queues[SHADOW].queued == 101  # every answer given before its copy was scored
        await until(
            lambda: counted(metrics, "shipml_predictions_total", variant=SHADOW, version="1", status="ok") == 100
        )
        await service.close()

    try:
        asyncio.run(traffic())
    finally:
        writer.close()
    copies = setup.store.predictions.read_outcomes("churn", 0, time.time() + 1, role="shadow")
    ids = copies.ids
    assert sorted(copies.keys.tolist()) == sorted(keys) and len(set(ids.tolist())) == 100
    assert set(copies.label.tolist()) <= {"0", "1"}  # the shadow's outputs, kept to compare with the champion's
    primary_ids = setup.store.predictions.read_outcomes("churn", 0, time.time() + 1).ids
    assert len(primary_ids) == 100 and not set(ids.tolist()) & set(primary_ids.tolist())
    assert (
        setup.store.predictions.count("churn", role="shadow", status="invalid") == 1
    )  # the refused copy is logged too
    # one batch: one model call for the 101 copies
    assert counted(metrics, "shipml_variant_latency_seconds_count", variant=SHADOW) == 1
    assert counted(metrics, "shipml_shadow_dropped_total", variant=SHADOW) == 0


def test_a_batch_past_the_shadow_timeout_is_counted_and_never_reaches_a_client(setup: Setup) -> None:
    hanging = HangingPredictor(setup.shadow.bundle.predictor)
    stuck = dataclasses.replace(setup.shadow, bundle=dataclasses.replace(setup.shadow.bundle, predictor=hanging))
    writer = StoreWriter(setup.store, queue_size=10_000, batch_max=512)
    metrics = ServerMetrics()
    service = PredictionService(writer, "commit", metrics, shadow_timeout_s=0.2)

    async def traffic() -> None:
        # answered (and committed) while the shadow's call hangs
        records = [Record(row, key) for row, key in zip(setup.rows[:3], "abc", strict=True)]
        answered = await service.run(setup.deployment(stuck), records)
        assert [r.ok for r in answered] == [True, True, True]
        await until(lambda: counted(metrics, "shipml_shadow_failures_total", variant=SHADOW, version="1") == 1)
        # the next batch is scored
        again = await service.run(setup.deployment(), [Record(setup.rows[0], "d"), Record(setup.rows[1], "e")])
        assert [r.ok for r in again] == [True, True]
        await service.close()

    try:
        asyncio.run(traffic())
    finally:
        hanging.release.set()
        writer.close()
    assert setup.store.predictions.count("churn", role="shadow") == 2
    assert setup.store.predictions.count("churn", role="shadow", status="error") == 3  # the timed-out copies, logged
    assert counted(metrics, "shipml_predictions_total", variant=SHADOW, version="1", status="ok") == 2
    assert counted(metrics, "shipml_predictions_total", variant="main", version="1", status="ok") == 5


def test_a_full_queue_drops_new_copies_and_counts_them(setup: Setup) -> None:
    writer = StoreWriter(setup.store, queue_size=10_000, batch_max=512)
    metrics = ServerMetrics()
    service = PredictionService(writer, "async", metrics, shadow_queue_rows=5)

    async def traffic() -> None:
        # one after the other, without the loop running the drainer in between (nothing here waits)
        for i in range(8):
            await service.run(setup.deployment(), [Record(setup.rows[i], f"user-{i}")])
        assert counted(metrics, "shipml_shadow_dropped_total", variant=SHADOW) == 3
        await service.close()

    try:
        asyncio.run(traffic())
    finally:
        writer.close()
    assert setup.store.predictions.count("churn", role="primary") == 8
    assert setup.store.predictions.count("churn", role="shadow") == 5  # the 5 queued copies were scored by close
    assert counted(metrics, "shipml_shadow_dropped_total", variant=SHADOW) == 3


def test_closing_drops_what_it_cannot_score_in_time_and_every_copy_after(setup: Setup) -> None:
    scored: list[int] = []
    dropped: list[int] = []
    never = asyncio.Event()

    async def score(variant: Variant, records: list[Record]) -> None:
        scored.append(len(records))
        if len(scored) == 2:
            await never.wait()  # a batch stuck past close's time

    queue = ShadowQueue(SHADOW, score, lambda _v, n: dropped.append(n), batch_rows=4, gather_s=0.0)

    async def traffic() -> None:
        for i in range(11):  # three batches of 4, 4 and 3 copies
            queue.put(setup.shadow, [Record(setup.rows[i], str(i))])
        await asyncio.wait_for(queue.close(0.3), 30)  # it comes back (a bound against a hang)
        queue.put(setup.shadow, [Record(setup.rows[0], "late")])

    asyncio.run(traffic())
    assert scored == [4, 4]
    assert sum(dropped) == 4 + 3 + 1  # the stuck batch, the copies never started, the one put after close
    assert queue.queued == 0


def test_clean_copies_are_scored_and_logged_as_one_unit_of_columns(setup: Setup) -> None:
    """A batch of clean copies goes as a clean /predict/batch does: no Prediction per record, one row of columns
    with the shadow's role and the copies' keys."""
    writer = StoreWriter(setup.store, queue_size=10_000, batch_max=512)
    metrics = ServerMetrics()
    service = PredictionService(writer, "async", metrics)
    units: list[int] = []
    write = setup.store.predictions.write

    def counted_units(batch: list[object]) -> None:
        units.extend(len(u) for u in batch)  # type: ignore[arg-type]
        write(batch)  # type: ignore[arg-type]

    setup.store.predictions.write = counted_units  # type: ignore[method-assign]
    keys = [f"user-{i}" for i in range(200)]

    async def traffic() -> None:
        await service.run(setup.deployment(), [Record(setup.rows[i], key) for i, key in enumerate(keys)])
        await until(
            lambda: counted(metrics, "shipml_predictions_total", variant=SHADOW, version="1", status="ok") == 200
        )
        await service.close()

    try:
        asyncio.run(traffic())
    finally:
        writer.close()
    assert sorted(units) == [200, 200]  # the answers' unit and the shadow's, each of columns
    copies = setup.store.predictions.read_outcomes("churn", 0, time.time() + 1, role="shadow")
    assert sorted(copies.keys.tolist()) == sorted(keys) and len(set(copies.ids.tolist())) == 200
    answered = setup.store.predictions.read_outcomes("churn", 0, time.time() + 1)
    assert len(answered.ids) == 200 and not set(copies.ids.tolist()) & set(answered.ids.tolist())
    assert counted(metrics, "shipml_shadow_failures_total", variant=SHADOW, version="1") == 0
