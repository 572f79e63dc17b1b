"""Many processes opening a fresh store at the same moment, as the workers of `shipml serve --workers N` do.

Correctness review M1: SQLite failed with "table predictions already exists" (33 of 60 opens of a 4-process
barrier), Postgres with DuplicateTable, UniqueViolation on pg_type_typname_nsp_index and DuplicateColumn.
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from shipml.adapters.store import LATEST, PredictionStore, tables
from shipml.core.schema import Feature, FeatureSchema, Target
from tests.support.dialects import DIALECTS, fresh_postgres_database
from tests.support.launcher import warm_context
from tests.support.logged import logged

pytestmark = pytest.mark.integration

PROCESSES = 6
ROUNDS = 10
SCHEMA = FeatureSchema(
    (Feature("Age", "numeric"), Feature("age", "integer"), Feature("plan", "categorical")),
    Target("churn", "binary", ("0", "1")),
)


def open_at_once(worker: int, uris: list[str], barrier: threading.Barrier, results: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    """In a spawned process: for each round, wait for every process, then open the round's store,
    register the schema and log one row."""
    for round_, uri in enumerate(uris):
        try:
            barrier.wait(timeout=120)
        except threading.BrokenBarrierError:
            results.put((round_, worker, "the barrier broke"))
            continue
        try:
            store = PredictionStore(uri)
            store.predictions.register_schema(SCHEMA)
            row = logged(
                f"r{round_}-w{worker}", time.time(), "churn", "1", "main", {"Age": 40.0, "age": 4.0, "plan": "gold"},
                {"value": 1.0}, 1.0, schema_sha256=SCHEMA.sha256(),
            )  # fmt: skip
            store.predictions.write([[row]])
            store.close()
            results.put((round_, worker, "ok"))
        except Exception as exc:  # the figure the test prints: what failed, by type
            results.put((round_, worker, f"{type(exc).__name__}: {exc}"))


@pytest.mark.parametrize("dialect", DIALECTS)
def test_processes_opening_a_fresh_store_at_once_all_succeed(
    request: pytest.FixtureRequest, dialect: str, tmp_path: Path
) -> None:
    if dialect == "sqlite":
        uris = [f"sqlite:///{tmp_path}/round{r}.db" for r in range(ROUNDS)]
    else:
        server = request.getfixturevalue("postgres_uri")
        uris = [fresh_postgres_database(server) for _ in range(ROUNDS)]
    ctx = warm_context()  # processes of their own, forked from a server that imported the store once
    barrier = ctx.Barrier(PROCESSES)
    results = ctx.Queue()
    procs = [ctx.Process(target=open_at_once, args=(w, uris, barrier, results)) for w in range(PROCESSES)]
    for p in procs:
        p.start()
    outcomes = []
    try:
        for _ in range(PROCESSES * ROUNDS):
            outcomes.append(results.get(timeout=300))
    except queue.Empty:
        pass
    for p in procs:
        p.join(timeout=60)
        if p.is_alive():
            p.kill()
    failures = [o for o in outcomes if o[2] != "ok"]
    print(f"{dialect}: {len(outcomes) - len(failures)} of {PROCESSES * ROUNDS} concurrent opens succeeded")
    assert failures == [] and len(outcomes) == PROCESSES * ROUNDS
    for uri in uris:
        store = PredictionStore(uri)
        with store.database.engine.connect() as conn:
            got = conn.execute(sa.select(tables.schema_version.c.version).order_by(tables.schema_version.c.version))
            assert list(got.scalars()) == list(range(1, LATEST + 1))  # one row per migration
            catalog = conn.execute(sa.select(sa.func.count()).select_from(tables.feature_catalog)).scalar_one()
        assert catalog == len(SCHEMA.features)
        window = store.predictions.read_window("churn", 0, time.time() + 1)
        assert len(window) == PROCESSES
        assert set(window.features["Age"].tolist()) == {40.0} and set(window.features["age"].tolist()) == {4.0}
        store.close()
