"""Pruning the store (issue 18, item 5) on each dialect: predictions, batches and their feedback before the cut go,
in deletes of at most ``batch_rows`` rows (SQLite) or whole daily partitions (Postgres); histograms and reports go
on their own, longer horizon; a dry run changes nothing."""

from __future__ import annotations

import random
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from shipml.adapters.store import PredictionStore, tables
from shipml.adapters.store.partitions import DAY_S
from shipml.core.schema import FeatureSchema
from shipml.examples.churn import generate_churn
from tests.support.dialects import DIALECTS, store_uri_for
from tests.support.logged import batch_of, logged

OUTPUTS = {"predicted_class": "1", "probabilities": {"0": 0.25, "1": 0.75}}
NOW = time.time()
OLD, NEW = NOW - 100 * DAY_S, NOW - 10 * DAY_S
HISTORY_CUT = NOW - 400 * DAY_S


def ids_at(ts: float, n: int) -> list[str]:
    """``n`` UUIDv7 ids made at ``ts`` (as the service's would be), in order."""
    ms, rng = int(ts * 1000), random.Random(int(ts))  # noqa: S311 - test ids
    return [
        str(uuid.UUID(int=(ms << 80) | (0x7 << 76) | (i << 64) | (0b10 << 62) | rng.getrandbits(62))) for i in range(n)
    ]


@pytest.fixture(params=DIALECTS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    s = PredictionStore(store_uri_for(request, str(request.param), tmp_path))
    yield s
    s.close()


def fill(store: PredictionStore, old_rows: int) -> tuple[list[str], list[str]]:
    """``old_rows`` predictions 100 days old, 50 ten days old, a batch of 100 of each age, feedback for some of
    each, and histograms and reports older and younger than the history's horizon; (old ids, new ids)."""
    schema = FeatureSchema.infer(generate_churn(50), "churn", id_columns=("customer_id",))
    sha = store.predictions.register_schema(schema).schema_sha256
    old, new = ids_at(OLD, old_rows + 100), ids_at(NEW, 150)
    for chunk in range(0, old_rows, 5_000):
        store.predictions.write(
            [[logged(i, OLD, "churn", "1", "main", {"tenure": 1.0}, OUTPUTS, 0.5) for i in old[chunk : chunk + 5_000]]]
        )
    store.predictions.write([[logged(i, NEW, "churn", "1", "main", {"tenure": 1.0}, OUTPUTS, 0.5) for i in new[:50]]])
    for ids, ts in ((old[old_rows:], OLD), (new[50:], NEW)):
        unit = batch_of(ids, ts, "churn", "1", "main", sha, [{"tenure": 1.0}] * 100, 0.5, labels=["1"] * 100,
                        classes=("0", "1"), proba=[(0.25, 0.75)] * 100)  # fmt: skip
        store.predictions.write([unit])
    for i in (*old[:10], *old[-5:], *new[:10], *new[-5:]):
        assert store.feedback.add(i, "1", None)
    with store.database.engine.begin() as conn:
        for minute in (HISTORY_CUT - 3600, NOW - 3600):
            conn.execute(
                sa.insert(tables.feature_histograms).values(
                    model="churn",
                    minute=int(minute // 60),
                    version="1",
                    variant="main",
                    role="primary",
                    writer="w",
                    layout_sha="x",
                    n_rows=1,
                    counts=b"",
                )
            )
            conn.execute(
                sa.insert(tables.drift_reports).values(
                    model="churn", created_at=minute, since=0, until=1, verdict="no_drift", report="{}"
                )
            )
    return old, new


def deletes(store: PredictionStore, action: Any) -> list[int]:
    """The row counts of the DELETE statements ``action`` runs."""
    counts: list[int] = []

    def seen(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if statement.lstrip().upper().startswith("DELETE"):
            counts.append(cursor.rowcount)

    sa.event.listen(store.database.engine, "after_cursor_execute", seen)
    try:
        action()
    finally:
        sa.event.remove(store.database.engine, "after_cursor_execute", seen)
    return counts


def test_prune_removes_old_predictions_batches_and_feedback_in_short_batches(store: PredictionStore) -> None:
    old, new = fill(store, 25_000)
    assert store.predictions.count() == 25_000 + 100 + 150
    cut = NOW - 90 * DAY_S
    dry = store.retention.prune(cut, HISTORY_CUT, batch_rows=10_000, dry_run=True)
    assert (dry.predictions + dry.partition_rows, dry.feedback, dry.histograms, dry.reports) == (25_100, 15, 1, 1)
    assert store.predictions.count() == 25_250  # the dry run changed nothing
    found: list[Any] = []
    counts = deletes(store, lambda: found.append(store.retention.prune(cut, HISTORY_CUT, batch_rows=10_000)))
    pruned = found[0]
    assert counts and max(counts) <= 10_000  # every delete is a short transaction of at most 10,000 rows
    assert store.predictions.count() == 150
    assert pruned.feedback == 15 and pruned.histograms == 1 and pruned.reports == 1
    assert store.predictions.get(old[0]) is None and store.predictions.get(old[-1]) is None
    assert store.predictions.get(new[0]) is not None and store.predictions.get(new[-1]) is not None
    assert store.feedback.get(old[0]) is None and store.feedback.get(new[0]) is not None
    assert store.feedback.get(new[-1]) is not None
    with store.database.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(tables.feature_histograms)).scalar_one() == 1
        assert conn.execute(sa.select(sa.func.count()).select_from(tables.drift_reports)).scalar_one() == 1
    again = store.retention.prune(cut, HISTORY_CUT)
    assert (again.predictions, again.partitions, again.feedback) == (0, (), 0)
    print(f"FIGURE prune {store.database.engine.dialect.name}: 25,100 predictions in {pruned.seconds:.2f} s")


@pytest.mark.integration
def test_postgres_prune_drops_whole_days(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    store = PredictionStore(store_uri_for(request, "postgres", tmp_path))
    for day in (OLD, NEW):  # the days exist as partitions (made ahead, back then)
        store.partitions.ensure(0, now=day)
    old, new = fill(store, 25_000)
    store.predictions.write([[logged(ids_at(5.0, 1)[0], 5.0, "churn", "1", "main", {}, OUTPUTS, 0.5)]])  # DEFAULT
    pruned = store.retention.prune(NOW - 90 * DAY_S, None)
    assert set(pruned.partitions) == {
        f"predictions_p{time.strftime('%Y%m%d', time.gmtime(OLD))}",
        f"prediction_batches_p{time.strftime('%Y%m%d', time.gmtime(OLD))}",
    }
    assert pruned.predictions == 1  # the DEFAULT partition's row, deleted; the old days went whole
    assert store.predictions.count() == 150 and store.predictions.get(old[3]) is None
    assert pruned.feedback == 15 and store.feedback.get(new[0]) is not None
    assert (pruned.histograms, pruned.reports) == (0, 0)  # history: kept forever
    print(f"FIGURE prune postgres: 2 daily partitions (25,100 predictions) dropped in {pruned.seconds:.3f} s")
    store.close()
