"""The prediction store's conformance suite: every check runs on each dialect (SQLite, Postgres)."""

from __future__ import annotations

import asyncio
import fcntl
import math
import os
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from shipml.adapters.store import (
    NUMERIC_SLOTS,
    PredictionStore,
    StoreError,
    StoreFull,
    StoreWriter,
    slots_for,
)
from shipml.core.canary import Canary
from shipml.core.monitor_report import DriftReport
from shipml.core.notification import SentVerdict
from shipml.core.prediction import Prediction, Truth
from shipml.core.schema import Feature, FeatureSchema, Target
from tests.support.dialects import DIALECTS, store_uri_for
from tests.support.logged import logged


def schema_of(*features: tuple[str, str], task: str = "binary") -> FeatureSchema:
    return FeatureSchema(
        tuple(Feature(name, kind) for name, kind in features),  # type: ignore[arg-type]
        Target("y", task, ("0", "1") if task == "binary" else None),  # type: ignore[arg-type]
    )


CHURNISH = schema_of(("tenure", "numeric"), ("contract", "categorical"))


def row(i: int, schema: FeatureSchema | None = CHURNISH, version: str = "1", **features: Any) -> Prediction:
    return logged(
        f"id-{i:04d}", 1000.0 + i, "churn", version, "main", dict(features), {"p": 0.5}, 1.0,
        schema_sha256=schema.sha256() if schema is not None else "",
    )  # fmt: skip


@pytest.fixture(params=DIALECTS)
def dialect(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store_uri(request: pytest.FixtureRequest, dialect: str, tmp_path: Path) -> str:
    return store_uri_for(request, dialect, tmp_path)


@pytest.fixture
def store(store_uri: str) -> Iterator[PredictionStore]:
    s = PredictionStore(store_uri)
    s.predictions.register_schema(CHURNISH)
    yield s
    s.close()


def test_rows_land_with_their_typed_features_and_outputs(store: PredictionStore) -> None:
    store.predictions.write([[row(1, tenure=3.0, contract="one-year"), row(2, tenure=None, contract=None)]])
    got = store.predictions.get("id-0001")
    assert got is not None
    assert got.features == {"tenure": 3.0, "contract": "one-year"}
    s = got.served
    assert (s.model, s.version, s.variant, s.role, got.key) == ("churn", "1", "main", "primary", None)
    window = store.predictions.read_window("churn", 0, 2000)
    assert window.ids.tolist() == ["id-0001", "id-0002"]
    assert window.features["tenure"][0] == 3.0 and math.isnan(window.features["tenure"][1])
    assert window.features["contract"].tolist() == ["one-year", None]
    assert window.kinds == {"tenure": "numeric", "contract": "categorical"}
    assert store.predictions.count() == 2 and store.predictions.get("nope") is None


def test_a_refused_record_is_logged_with_its_status_and_left_out_of_monitoring_reads(store: PredictionStore) -> None:
    # Reliability case 17: a record refused by validation is logged too, with its features as sent (which
    # need not fit the schema: no schema_sha256, so JSON only), and monitoring reads skip it by default.
    sha = CHURNISH.sha256()
    store.predictions.write([[
        row(1, tenure=1.0, contract="monthly"),
        logged("id-0002", 1002.0, "churn", "1", "main", {"tenure": "x", "contract": 5}, {}, 1.0,
                      status="invalid"),
        logged("id-0003", 1003.0, "churn", "1", "main", {"tenure": 2.0, "contract": "monthly"}, {}, 1.0,
                      schema_sha256=sha, status="output_invalid"),
        row(4, tenure=3.0, contract="two-year"),
    ]])  # fmt: skip
    refused = store.predictions.get("id-0002")
    assert refused is not None
    assert (refused.status, refused.served.schema_sha256) == ("invalid", "")
    assert refused.features == {"tenure": "x", "contract": 5}
    assert [store.predictions.get(i).status for i in ("id-0003", "id-0001")] == ["output_invalid", "ok"]  # type: ignore[union-attr]
    assert store.predictions.count() == 2 and store.predictions.count("churn") == 2
    assert store.predictions.count(status=None) == 4 and store.predictions.count(status="invalid") == 1
    window = store.predictions.read_window("churn", 0, 2000)
    assert window.ids.tolist() == ["id-0001", "id-0004"]
    assert window.features["tenure"].tolist() == [1.0, 3.0] and window.kinds["tenure"] == "numeric"
    every = store.predictions.read_window("churn", 0, 2000, status=None)
    assert every.ids.tolist() == ["id-0001", "id-0002", "id-0003", "id-0004"]
    assert every.features["tenure"].tolist() == [1.0, "x", 2.0, 3.0] and every.kinds["tenure"] == "mixed"
    assert store.predictions.read_window("churn", 0, 2000, status="invalid").ids.tolist() == ["id-0002"]


def test_a_batch_with_one_refused_record_logs_every_row_with_its_status(store: PredictionStore) -> None:
    # Reliability case 17: 1 bad row among 99 good: 99 predictions and one refused record, all 100 logged.
    rows = [row(i, tenure=float(i)) for i in range(100)]
    rows[37] = logged("id-0037", 1037.0, "churn", "1", "main", {"tenure": "seven"}, {}, 0.0, status="invalid")
    writer = StoreWriter(store, queue_size=1000, batch_max=512)
    writer.submit_many(rows).result(timeout=10)
    writer.close()
    assert (
        store.predictions.count(),
        store.predictions.count(status=None),
        store.predictions.count(status="invalid"),
    ) == (99, 100, 1)
    window = store.predictions.read_window("churn", 0, 2000)
    assert "id-0037" not in window.ids.tolist() and len(window) == 99
    assert window.features["tenure"].tolist() == [float(i) for i in range(100) if i != 37]


def test_label_and_score_are_filled_from_the_outputs(store: PredictionStore) -> None:
    base = row(0, tenure=1.0)
    binary = {"predicted_class": "yes", "probabilities": {"no": 0.25, "yes": 0.75}}
    multi = {"predicted_class": 2, "probabilities": {"0": 0.1, "1": 0.3, "2": 0.6}}
    sha = base.served.schema_sha256
    store.predictions.write([[
        logged("b", 1.0, "churn", "1", "main", base.features, binary, 1.0, schema_sha256=sha),
        logged("m", 2.0, "churn", "1", "main", base.features, multi, 1.0, schema_sha256=sha),
        logged("r", 3.0, "churn", "1", "main", base.features, {"value": -4.5}, 1.0),
    ]])  # fmt: skip
    window = store.predictions.read_window("churn", 0, 10)
    assert window.label.tolist() == ["yes", "2", None]
    assert window.score.tolist() == [0.75, 0.6, -4.5]  # second class; the largest; the value
    assert store.predictions.get("b").outputs() == binary  # type: ignore[union-attr]


def test_read_window_filters_by_time_version_variant_and_role(store: PredictionStore) -> None:
    sha = CHURNISH.sha256()
    store.predictions.write([[
        logged("a", 10.0, "churn", "1", "main", {"tenure": 1.0}, {}, 1.0, schema_sha256=sha),
        logged("b", 11.0, "churn", "2", "main", {"tenure": 2.0}, {}, 1.0, schema_sha256=sha),
        logged("c", 12.0, "churn", "2", "b", {"tenure": 3.0}, {}, 1.0, routing_key="k1", schema_sha256=sha),
        logged("d", 13.0, "churn", "2", "b", {"tenure": 4.0}, {}, 1.0, role="shadow", schema_sha256=sha),
        logged("e", 14.0, "other", "1", "main", {"tenure": 5.0}, {}, 1.0, schema_sha256=sha),
        logged("f", 20.0, "churn", "1", "main", {"tenure": 6.0}, {}, 1.0, schema_sha256=sha),
    ]])  # fmt: skip
    assert store.predictions.read_window("churn", 10, 20).ids.tolist() == [
        "a",
        "b",
        "c",
    ]  # until is exclusive; primary only
    assert store.predictions.read_window("churn", 10, 20, version="2").ids.tolist() == ["b", "c"]
    assert store.predictions.read_window("churn", 10, 20, variant="b").features["tenure"].tolist() == [3.0]
    assert store.predictions.read_window("churn", 10, 20, role="shadow").ids.tolist() == ["d"]
    assert store.predictions.read_window("churn", 10, 20, role=None).version.tolist() == ["1", "2", "2", "2"]
    assert len(store.predictions.read_window("churn", 30, 40)) == 0
    assert store.predictions.count("churn") == 5 and store.predictions.count("churn", role="shadow") == 1
    assert store.predictions.count("churn", since=11, until=13) == 2 and store.predictions.count(version="1") == 3
    assert store.predictions.get("c").key == "k1"  # type: ignore[union-attr]


def test_names_that_collide_once_lowercased_or_cut_keep_their_own_values(store: PredictionStore) -> None:
    # Correctness review H1: "Age"/"age" and two names sharing their first 55 characters were one column.
    prefix = "customer_lifetime_value_estimated_by_the_marketing_team_"  # 57 characters
    schema = schema_of(
        ("Age", "numeric"), ("age", "numeric"), (prefix + "a", "numeric"), (prefix + "b", "numeric"),
        ("a-b", "categorical"), ("a_b", "categorical"),
    )  # fmt: skip
    store.predictions.register_schema(schema)
    values: list[dict[str, Any]] = [
        {"Age": 41.0, "age": 7.5, prefix + "a": 1e-300, prefix + "b": -0.1, "a-b": "x", "a_b": "Y"},
        {"Age": None, "age": 0.1 + 0.2, prefix + "a": 2.0**60, prefix + "b": None, "a-b": "é ✓", "a_b": None},
    ]
    store.predictions.write([[row(i, schema, **v) for i, v in enumerate(values)]])
    window = store.predictions.read_window("churn", 0, 2000)
    for name in values[0]:
        got = window.features[name].tolist()
        want = [v[name] for v in values]
        assert [None if isinstance(g, float) and math.isnan(g) else g for g in got] == want, name


def test_a_feature_that_changes_kind_between_schemas_keeps_each_kind(store: PredictionStore) -> None:
    # Correctness review H1: on Postgres "invalid input syntax for type double precision: "gold"".
    numeric = schema_of(("plan", "numeric"), ("tenure", "numeric"))
    categorical = schema_of(("tenure", "numeric"), ("plan", "categorical"))
    store.predictions.register_schema(numeric)
    store.predictions.register_schema(categorical)
    store.predictions.write(
        [[row(1, numeric, "1", plan=2.5, tenure=1.0), row(2, categorical, "2", plan="gold", tenure=3.0)]]
    )
    v1, v2 = (store.predictions.read_window("churn", 0, 2000, version=v) for v in ("1", "2"))
    assert v1.features["plan"].dtype == np.float64 and v1.features["plan"].tolist() == [2.5]
    assert v2.features["plan"].tolist() == ["gold"] and v2.kinds["plan"] == "categorical"
    both = store.predictions.read_window("churn", 0, 2000)
    assert both.kinds["plan"] == "mixed" and both.features["plan"].tolist() == [2.5, "gold"]
    assert both.features["tenure"].tolist() == [1.0, 3.0] and len(both.schemas) == 2


def test_features_beyond_the_slots_are_read_back_from_the_record(store: PredictionStore) -> None:
    wide = schema_of(*[(f"x{i}", "numeric") for i in range(NUMERIC_SLOTS + 6)], ("city", "categorical"))
    slots = store.predictions.register_schema(wide)
    assert slots.unslotted == tuple(f"x{i}" for i in range(NUMERIC_SLOTS, NUMERIC_SLOTS + 6))
    record: dict[str, Any] = {f"x{i}": float(i) / 3 for i in range(NUMERIC_SLOTS + 6)} | {"city": "Lyon"}
    store.predictions.write([[row(1, wide, **record)]])
    window = store.predictions.read_window("churn", 0, 2000)
    assert {name: values.tolist()[0] for name, values in window.features.items()} == record


def test_rows_of_an_unregistered_schema_keep_their_features_in_the_record(store: PredictionStore) -> None:
    store.predictions.write([[row(1, None, tenure=2.0, plan="gold")]])
    window = store.predictions.read_window("churn", 0, 2000)
    assert window.features["tenure"].tolist() == [2.0] and window.features["plan"].tolist() == ["gold"]


def test_slots_are_a_pure_function_of_the_schema_and_registering_is_idempotent(store: PredictionStore) -> None:
    schema = schema_of(("b", "categorical"), ("a", "integer"), ("B", "boolean"), ("c", "categorical"))
    slots = slots_for(schema)
    assert [(f.name, f.slot) for f in slots.features] == [("b", "c0"), ("a", "n0"), ("B", "n1"), ("c", "c1")]
    assert store.predictions.register_schema(schema) == slots == store.predictions.register_schema(schema)
    assert slots_for(schema) == slots


def test_feedback_joins_by_id_and_unknown_id_is_refused(store: PredictionStore) -> None:
    store.predictions.write([[row(1, tenure=1.0)]])
    assert store.feedback.add("id-0001", "1", None)
    long_label = "churned because " * 40  # correctness review M3: over 200 characters failed on Postgres
    assert store.feedback.add("id-0001", long_label, None)  # later feedback replaces earlier
    assert not store.feedback.add("nope", "1", None)
    got = store.feedback.get("id-0001")
    assert got is not None and got == Truth(long_label, None)
    assert store.feedback.get("nope") is None


def test_writer_commits_in_batches_and_flushes_on_close(store: PredictionStore) -> None:
    writer = StoreWriter(store, queue_size=1000, batch_max=64)
    futures = [writer.submit(row(i, tenure=float(i))) for i in range(300)]
    for f in futures:
        f.result(timeout=10)
    writer.submit_many([row(1000 + i) for i in range(5)])
    writer.close()
    assert store.predictions.count() == 305


@pytest.mark.parametrize("n", [1, 13, 1000, 2600])
def test_a_batch_of_any_size_lands_whole_with_its_values(store: PredictionStore, n: int) -> None:
    store.predictions.write([[row(i, tenure=float(i), contract="one-year" if i % 2 else None) for i in range(n)]])
    assert store.predictions.count() == n
    window = store.predictions.read_window("churn", 0, 10_000)
    assert window.features["tenure"].tolist() == [float(i) for i in range(n)]
    assert window.features["contract"].tolist() == ["one-year" if i % 2 else None for i in range(n)]


def test_one_write_with_rows_of_several_schemas_lands_each_in_its_slots(store: PredictionStore) -> None:
    other = schema_of(("contract", "categorical"), ("tenure", "numeric"), ("age", "numeric"))
    store.predictions.register_schema(other)
    rows = [row(i, other if i % 3 == 0 else CHURNISH, tenure=float(i), contract=str(i), age=1.0) for i in range(40)]
    store.predictions.write([rows])
    window = store.predictions.read_window("churn", 0, 2000)
    assert window.features["tenure"].tolist() == [float(i) for i in range(40)]
    assert window.features["contract"].tolist() == [str(i) for i in range(40)]
    ages = window.features["age"].tolist()
    assert [a for i, a in enumerate(ages) if i % 3 == 0] == [1.0] * 14
    assert all(math.isnan(a) for i, a in enumerate(ages) if i % 3)  # CHURNISH has no age: not in the window


def test_an_event_loop_waits_for_the_commit_of_its_rows(store: PredictionStore) -> None:
    writer = StoreWriter(store, queue_size=1000, batch_max=512, window_ms=0.4)

    async def predict_and_log() -> list[int]:
        waits = [writer.submit_waitable([row(i, tenure=float(i))]) for i in range(50)]
        await asyncio.gather(*waits)
        return [store.predictions.count()]

    assert asyncio.run(predict_and_log()) == [50]  # every row committed before the callers go on
    writer.close()


def _held_writer(store: PredictionStore, queue_size: int) -> tuple[StoreWriter, threading.Event]:
    """A writer whose first commit waits for the returned event (the queue then fills up)."""
    release = threading.Event()
    original = store.predictions.write

    def slow(units: Sequence[Sequence[Prediction]]) -> None:
        release.wait(10)
        original(units)

    store.predictions.write = slow  # type: ignore[method-assign]
    writer = StoreWriter(store, queue_size=queue_size, batch_max=1)
    writer.submit(row(0))
    deadline = time.monotonic() + 10
    while writer.pending and time.monotonic() < deadline:  # the writer holds row 0; the queue is empty again
        time.sleep(0.01)
    return writer, release


def test_full_queue_sheds_at_once(store: PredictionStore) -> None:
    writer, release = _held_writer(store, queue_size=2)
    writer.submit(row(2))
    writer.submit(row(3))
    with pytest.raises(StoreFull):
        writer.submit(row(4))
    release.set()
    writer.close()
    assert store.predictions.count() == 3


def test_a_reserved_batch_is_queued_in_pieces_without_shedding_any(store: PredictionStore) -> None:
    # Correctness review L4: room was checked once, then a later piece of the batch could hit StoreFull.
    writer, release = _held_writer(store, queue_size=10)
    writer.reserve(10)
    with pytest.raises(StoreFull):
        writer.submit(row(99))  # another request finds the reserved room taken
    for lo in range(0, 9, 3):
        writer.enqueue([row(lo + k + 1) for k in range(3)], reserved=True)
    writer.release(1)  # one record of the batch was refused by validation: its room is given back
    assert writer.pending == 9
    release.set()
    writer.flush()
    writer.close()
    assert store.predictions.count() == 10 and writer.pending == 0


def test_a_reservation_over_the_room_left_raises_and_takes_nothing(store: PredictionStore) -> None:
    writer, release = _held_writer(store, queue_size=10)
    writer.reserve(6)
    with pytest.raises(StoreFull):
        writer.reserve(5)
    assert writer.pending == 6
    writer.release(6)
    writer.reserve(10)  # the whole queue is free again
    writer.release(10)
    release.set()
    writer.close()
    assert writer.pending == 0 and store.predictions.count() == 1


def test_write_failure_reaches_the_waiting_caller(store: PredictionStore) -> None:
    errors: list[BaseException] = []

    def broken(units: Sequence[Sequence[Prediction]]) -> None:
        raise RuntimeError("disk gone")

    store.predictions.write = broken  # type: ignore[method-assign]
    writer = StoreWriter(store, queue_size=10, batch_max=10, on_error=errors.append)
    fut = writer.submit(row(1))
    with pytest.raises(StoreError, match="prediction log write failed"):
        fut.result(timeout=10)
    assert len(errors) == 1
    writer.close()


def test_a_commit_failing_once_is_retried_and_nothing_is_lost(store: PredictionStore) -> None:
    """L6: a transient failure (a connection reset, a failover) costs one retry, not the commit's rows."""
    real, failures = store.predictions.write, [RuntimeError("connection reset")]

    def flaky(units: Sequence[Sequence[Prediction]]) -> None:
        if failures:
            raise failures.pop()
        real(units)

    store.predictions.write = flaky  # type: ignore[method-assign]
    dropped: list[int] = []
    writer = StoreWriter(store, queue_size=10, batch_max=10, on_dropped=dropped.append)
    writer.enqueue([row(1), row(2)])
    writer.submit(row(3)).result(timeout=10)
    writer.close()
    assert store.predictions.count() == 3 and dropped == []


def test_rows_nobody_waits_for_are_counted_in_rows_when_their_commit_fails(store: PredictionStore) -> None:
    """L6: with async durability a failed commit loses its rows; what is counted is how many (the callers who
    wait, commit durability, are answered with the error instead)."""

    def broken(units: Sequence[Sequence[Prediction]]) -> None:
        raise RuntimeError("disk gone")

    store.predictions.write = broken  # type: ignore[method-assign]
    dropped: list[int] = []
    errors: list[BaseException] = []
    writer = StoreWriter(store, queue_size=100, batch_max=100, on_error=errors.append, on_dropped=dropped.append)
    writer.enqueue([row(i) for i in range(7)])
    waited = writer.submit(row(99))
    with pytest.raises(StoreError):
        waited.result(timeout=10)
    writer.close()
    assert sum(dropped) == 7 and errors


# SQLite only: its file, its journal, its connections.


@pytest.mark.parametrize("uri", ["sqlite:///:memory:", "sqlite://", "sqlite:///file:p?mode=memory&uri=true"])
def test_an_in_memory_sqlite_database_is_refused(uri: str) -> None:
    # Correctness review L3: every write failed with "no such table: predictions".
    with pytest.raises(StoreError, match="an in-memory SQLite database is private to one connection") as info:
        PredictionStore(uri)
    assert info.value.message.startswith("store.uri: cannot open sqlite")


def test_an_unreachable_database_is_a_store_error_without_the_password(tmp_path: Path) -> None:
    with pytest.raises(StoreError) as info:
        PredictionStore("postgresql+psycopg://shipml:S3cret@127.0.0.1:1/db?connect_timeout=2")
    assert info.value.message.startswith("store.uri: cannot open postgresql+psycopg://shipml:***@127.0.0.1:1/db")
    assert "S3cret" not in info.value.message
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreError, match=r"store\.uri: cannot open sqlite:///.*/file/p\.db"):
        PredictionStore(f"sqlite:///{tmp_path}/file/p.db")


def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    store = PredictionStore(f"sqlite:///{tmp_path}/p.db")
    with store.database.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    store.close()


def test_two_stores_on_one_sqlite_file_take_turns_as_worker_processes_do(
    tmp_path: Path, churn_df: pd.DataFrame
) -> None:
    schema = FeatureSchema.infer(churn_df, "churn", id_columns=("customer_id",))
    stores = [PredictionStore(f"sqlite:///{tmp_path}/shared.db") for _ in range(2)]
    for s in stores:
        s.predictions.register_schema(schema)

    def write_many(s: PredictionStore, offset: int) -> None:
        for i in range(100):
            s.predictions.write(
                [[row(offset + 2 * i, schema, tenure=1.0), row(offset + 2 * i + 1, schema, tenure=2.0)]]
            )

    threads = [threading.Thread(target=write_many, args=(s, k * 1000)) for k, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert stores[0].predictions.count() == 400
    assert (tmp_path / "shared.db.writelock").exists()
    for s in stores:
        s.close()


def _broken(store: PredictionStore) -> None:
    """The store's tables gone from under it (a database restored empty, a wrong file): every read and write fails."""
    with store.database.engine.begin() as conn:
        meta = sa.MetaData()
        meta.reflect(conn)
        meta.drop_all(conn)


# Every public method of every part, as a user of the store calls it (the row writer's ``write`` is the writer
# thread's: StoreWriter reports its failures, see test_write_failure_reaches_the_waiting_caller).
CALLS: dict[str, Any] = {
    "predictions.register_schema": lambda s: s.predictions.register_schema(schema_of(("plan", "numeric"))),
    "predictions.read_window": lambda s: s.predictions.read_window("churn", 0, 2000),
    "predictions.read_outcomes": lambda s: s.predictions.read_outcomes("churn", 0, 2000),
    "predictions.read_latencies": lambda s: s.predictions.read_latencies("churn", 0, 2000),
    "predictions.get": lambda s: s.predictions.get("id-0001"),
    "predictions.count": lambda s: s.predictions.count(),
    "feedback.add": lambda s: s.feedback.add("id-0001", "1", None),
    "feedback.get": lambda s: s.feedback.get("id-0001"),
    "feedback.read": lambda s: s.feedback.read(["id-0001"]),
    "histograms.register_profile": lambda s: s.histograms.register_profile("churn", "1", _profile(), "binary", "1"),
    "histograms.read": lambda s: s.histograms.read("churn", 0, 120),
    "histograms.replace": lambda s: s.histograms.replace("churn", 0, 120, []),
    "histograms.flush": lambda s: _flush_one(s),
    "reports.save": lambda s: s.reports.save(DriftReport("churn", 0.0, 60.0, 60.0, ())),
    "reports.latest": lambda s: s.reports.latest("churn"),
    "reports.recent": lambda s: s.reports.recent("churn", limit=3),
    "reports.latest_per_model": lambda s: s.reports.latest_per_model(),
    "experiments.latest": lambda s: s.experiments.latest("churn"),
    "canaries.save": lambda s: s.canaries.save(
        Canary("churn", "2", "main", (50.0, 100.0), 60.0, 10, 1.0, 1.0), expect=None
    ),
    "canaries.read": lambda s: s.canaries.read("churn"),
    "canaries.all": lambda s: s.canaries.all(),
    "canaries.events": lambda s: s.canaries.events("churn"),
    "leases.acquire": lambda s: s.leases.acquire("monitor:churn", "me", 1.0),
    "leases.release": lambda s: s.leases.release("monitor:churn", "me"),
    "leases.holder": lambda s: s.leases.holder("monitor:churn"),
    "notifications.last": lambda s: s.notifications.last("churn"),
    "notifications.record": lambda s: s.notifications.record(SentVerdict("churn", "drift", False, {"drift": 1.0})),
}


def _profile() -> Any:
    from shipml.core.profile import build_profile

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"tenure": rng.normal(30, 10, 200), "contract": rng.choice(["a", "b"], 200)})
    return build_profile(frame, CHURNISH, rng.uniform(0, 1, 200))


def _flush_one(store: PredictionStore) -> int:
    store.histograms.register_profile("churn", "1", _profile(), "binary", "1")
    _broken(store)
    store.histograms.observe([[row(1, tenure=3.0, contract="a")]])
    return store.histograms.flush(force=True)


@pytest.mark.parametrize("call", sorted(CALLS))
def test_a_database_failure_is_a_store_error_from_every_method(store: PredictionStore, call: str) -> None:
    """One translation of database errors (L1): a caller catches StoreError, never a driver's exception, so the
    service answers 503 store_unavailable and the CLI prints one line."""
    if call != "histograms.flush":
        _broken(store)
    with pytest.raises(StoreError, match=r"^store: "):
        CALLS[call](store)


def _another_process_can_lock(lock_path: Path) -> bool:
    """Whether a writer of another process would get the SQLite file's writer lock now (a flock on a file
    description of its own, as another process has)."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # releases the lock if it was taken
    return True


def test_a_thread_leaving_its_turn_does_not_end_another_threads_turn(tmp_path: Path) -> None:
    """L3: the writer thread and the monitor's thread share the store; the writer's unlock must not end the
    monitor's turn (on SQLite the lease's read and write rely on it)."""
    store = PredictionStore(f"sqlite:///{tmp_path}/p.db")
    lock_path = store.database.lock_path
    assert lock_path is not None
    inside, release = threading.Event(), threading.Event()

    def hold() -> None:
        with store.database.turn():
            inside.set()
            release.wait(30)

    def pass_through() -> None:
        with store.database.turn():
            pass

    holder = threading.Thread(target=hold)
    holder.start()
    assert inside.wait(30)
    assert not _another_process_can_lock(lock_path)
    other = threading.Thread(target=pass_through)
    other.start()
    other.join(timeout=0.5)  # it waits for the holder's turn to end (or, before the fix, ends it)
    assert not _another_process_can_lock(lock_path)  # the holder is still inside its turn
    release.set()
    holder.join()
    other.join()
    assert _another_process_can_lock(lock_path)
    store.close()


def test_concurrent_feedback_for_one_prediction_is_all_recorded(store: PredictionStore) -> None:
    """L1: a client retrying after a timeout sends the same feedback twice at once; each is recorded (the last
    one stays), none fails on the unique prediction id."""
    store.predictions.write([[row(1, tenure=1.0)]])
    start = threading.Barrier(16)
    outcomes: list[object] = []

    def send(i: int) -> None:
        start.wait()
        try:
            outcomes.append(store.feedback.add("id-0001", str(i % 2), None))
        except Exception as exc:  # the test reports whatever escaped
            outcomes.append(exc)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes == [True] * 16
    assert store.feedback.get("id-0001") in (Truth("0", None), Truth("1", None))


@pytest.mark.integration
def test_a_postgres_statement_held_up_past_its_timeout_fails_as_a_store_error(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """H2: a database that stops answering (here a lock another session holds) fails the call after
    store.statement_timeout_s instead of holding its thread for good."""
    uri = store_uri_for(request, "postgres", tmp_path)
    store = PredictionStore(uri, statement_timeout_s=1.0)
    blocker = sa.create_engine(uri).connect()
    blocker.exec_driver_sql("BEGIN")
    blocker.exec_driver_sql("LOCK TABLE feedback IN ACCESS EXCLUSIVE MODE")
    outcome: list[object] = []

    def read() -> None:
        try:
            outcome.append(store.feedback.get("id-0001"))
        except StoreError as exc:
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(60)  # a generous bound: without a timeout the read waits for the lock for good
    blocker.exec_driver_sql("ROLLBACK")
    blocker.close()
    reader.join()
    store.close()
    assert len(outcome) == 1 and isinstance(outcome[0], StoreError), outcome
    assert "statement timeout" in outcome[0].message
