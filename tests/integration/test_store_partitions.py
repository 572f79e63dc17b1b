"""Daily partitions of the prediction store on a real PostgreSQL (issue 18, item 4): made ahead, a DEFAULT
partition for a day without one, feedback by id in one partition, and the migration of an unpartitioned store
while the previous release keeps writing."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import sqlalchemy as sa

from shipml.adapters.store import PredictionStore, migrations
from shipml.adapters.store.partitions import DAY_S, day_name, day_start
from shipml.core.ids import Uuid7Generator
from tests.support.dialects import fresh_postgres_database
from tests.support.logged import logged

pytestmark = [pytest.mark.integration]

OUTPUTS = {"predicted_class": "1", "probabilities": {"0": 0.25, "1": 0.75}}


def rows(ids: list[str], ts: float) -> list[Any]:
    return [logged(i, ts, "churn", "1", "main", {"tenure": 1.0}, OUTPUTS, 0.5) for i in ids]


def names(store: PredictionStore, table: str = "predictions") -> list[str]:
    return [p.name for p in store.partitions.of(table)]


def test_a_new_store_is_partitioned_by_day_and_a_day_without_partition_still_takes_writes(postgres_uri: str) -> None:
    store = PredictionStore(fresh_postgres_database(postgres_uri))
    now = time.time()
    today = day_start(now)
    for table in ("predictions", "prediction_batches"):
        assert names(store, table) == [day_name(table, today), day_name(table, today + DAY_S), f"{table}_default"]
    created = store.partitions.ensure(3)
    assert created == [day_name(t, today + d * DAY_S) for t in ("predictions", "prediction_batches") for d in (2, 3)]
    assert store.partitions.ensure(3) == []  # idempotent
    ids = Uuid7Generator().strings(3)
    store.predictions.write([rows(ids[:2], now)])
    store.predictions.write([rows(ids[2:], 5.0)])  # 1970: no partition, the DEFAULT takes it
    assert store.partitions.default_rows() == 1
    assert store.predictions.count() == 3
    assert store.partitions.ensure(0, now=5.0) == ["predictions_p19700101", "prediction_batches_p19700101"]
    assert store.partitions.default_rows() == 0  # moved into the day's new partition
    assert store.predictions.count() == 3 and store.predictions.get(ids[2]) is not None
    store.close()


def plans(store: PredictionStore, action: Any) -> list[dict[str, Any]]:
    """EXPLAIN (FORMAT JSON) of every SELECT ``action`` runs on the store's engine."""
    seen: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "pg_" not in statement:
            seen.append((statement, parameters))

    sa.event.listen(store.database.engine, "before_cursor_execute", capture)
    try:
        action()
    finally:
        sa.event.remove(store.database.engine, "before_cursor_execute", capture)
    out = []
    with store.database.engine.connect() as conn:
        for statement, parameters in seen:
            out.append(conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + statement, parameters).scalar_one()[0]["Plan"])
    return out


def scans(plan: dict[str, Any]) -> list[tuple[str, str]]:
    """(node type, relation) of every scan in a plan."""
    found = [(plan["Node Type"], plan["Relation Name"])] if "Relation Name" in plan else []
    for child in plan.get("Plans", []):
        found += scans(child)
    return found


def test_feedback_by_id_is_one_index_lookup_in_one_partition(postgres_uri: str) -> None:
    store = PredictionStore(fresh_postgres_database(postgres_uri))
    store.partitions.ensure(5)
    now = time.time()
    ids = Uuid7Generator().strings(200)
    store.predictions.write([rows(ids, now)])
    target = ids[100]
    found = plans(store, lambda: store.feedback.add(target, "1", None))
    today = day_name("predictions", day_start(now))
    assert found, "feedback read no prediction"
    first = scans(found[0])
    assert len(first) == 1, first  # one partition of the seven, the others pruned at planning
    node, relation = first[0]
    assert relation == today and "Index" in node, first
    assert store.feedback.get(target) is not None
    store.close()


def test_an_unpartitioned_store_migrates_without_rewriting_while_the_old_release_writes(
    postgres_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = fresh_postgres_database(postgres_uri)
    with monkeypatch.context() as m:  # the previous release: migrations 1 to 9
        m.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:9])
        old = PredictionStore(uri)
    ids = Uuid7Generator()
    written: list[str] = []
    first = ids.strings(5_000)
    old.predictions.write([rows(first, time.time())])
    written += first
    engine = sa.create_engine(uri)
    with engine.connect() as conn:
        before = conn.exec_driver_sql("SELECT relfilenode FROM pg_class WHERE relname = 'predictions'").scalar_one()
    stop, errors = threading.Event(), []

    def old_release_writes() -> None:
        while not stop.is_set():
            chunk = ids.strings(20)
            try:
                old.predictions.write([rows(chunk, time.time())])
            except Exception as exc:
                errors.append(repr(exc))
                return
            written.extend(chunk)
            time.sleep(0.002)

    writer = threading.Thread(target=old_release_writes)
    writer.start()
    time.sleep(0.3)
    new = PredictionStore(uri)  # the new release opens the store: migration 10 runs
    time.sleep(0.3)
    stop.set()
    writer.join(30)
    assert errors == []
    assert len(written) > 5_000 + 20
    with engine.connect() as conn:
        kind = conn.exec_driver_sql("SELECT relkind FROM pg_class WHERE relname = 'predictions'").scalar_one()
        after = conn.exec_driver_sql(
            "SELECT relfilenode FROM pg_class WHERE relname = 'predictions_legacy'"
        ).scalar_one()
        stored = set(conn.exec_driver_sql("SELECT id FROM predictions").scalars())
    assert kind == "p" and after == before  # the old table's file is the legacy partition's: no row rewritten
    assert stored == set(written) and len(stored) == len(written)  # no row lost, none twice
    legacy = [p for p in new.partitions.of() if p.name == "predictions_legacy"]
    assert legacy and legacy[0].lower is None and legacy[0].upper == day_start(time.time()) + 2 * DAY_S
    assert new.feedback.add(first[7], "1", None)
    old.close()
    new.close()
    engine.dispose()


def test_rows_on_a_day_without_partition_are_counted_once_each(postgres_uri: str) -> None:
    store = PredictionStore(fresh_postgres_database(postgres_uri))
    seen: list[int] = []
    store.predictions.on_default_rows = seen.append
    ids = Uuid7Generator()
    store.predictions.write([rows(ids.strings(5), time.time())])  # today: its partition
    assert seen == []
    store.predictions.write([rows(ids.strings(3), time.time() - 30 * DAY_S)])  # a month ago: the DEFAULT
    assert seen == [3] and store.partitions.default_rows() == 3
    store.close()


def test_the_services_maintenance_makes_the_days_ahead_and_prunes_with_one_runner(postgres_uri: str) -> None:
    from shipml.config import Settings
    from shipml.server.maintenance import StoreMaintenance

    uri = fresh_postgres_database(postgres_uri)
    settings = Settings(store={"uri": uri, "partitions_ahead_days": 3, "retention": {"predictions": "20d"}})
    store, other = PredictionStore(uri), PredictionStore(uri)
    old = time.time() - 40 * DAY_S
    store.partitions.ensure(0, now=old)
    store.predictions.write([rows(Uuid7Generator().strings(4), old)])
    first, second = StoreMaintenance(settings, store), StoreMaintenance(settings, other)
    pruned = first.tick()
    assert pruned is not None and pruned.partitions == (day_name("predictions", day_start(old)),
                                                        day_name("prediction_batches", day_start(old)))  # fmt: skip
    assert second.tick() is None  # the lease is the first one's
    today = day_start(time.time())
    assert day_name("predictions", today + 3 * DAY_S) in names(store)
    assert store.predictions.count() == 0
    store.close()
    other.close()
