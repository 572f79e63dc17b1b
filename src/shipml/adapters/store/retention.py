"""The retention part of the store: what goes when the store is pruned, and how, on each dialect.

Predictions older than the cut go with their batches and their feedback; per-minute histograms, drift and
experiment reports and canary events go on a horizon of their own (``history_cut``, earlier). On Postgres whole
daily partitions older than the cut are dropped (partitions.py): a catalog change, the same time at any size; a
day goes once all of it is older than the cut, and the legacy and DEFAULT partitions lose their old rows by
batched deletes. On SQLite rows go by batched deletes of at most ``batch_rows`` rows, each its own short
transaction in the writers' turn, found by a read beforehand (in WAL a read never blocks a writer), so the
service's writers wait for one short delete at a time. Freed pages are reused by the rows that follow (the file
stops growing; it does not shrink).

Feedback is found by its prediction's id: a UUIDv7 says when its prediction was made, and the ids sort by time,
so ``prediction_id < <the cut's id prefix>`` is a range of the feedback's primary key.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from shipml.adapters.store import tables
from shipml.adapters.store.partitions import LOCK_TIMEOUT, TABLES, Partition, day_start, partitions_of
from shipml.errors import StoreError

if TYPE_CHECKING:
    from shipml.adapters.store.engine import Database

DROP_ATTEMPTS = 5  # a partition's DROP waits LOCK_TIMEOUT for its lock, this many times, before the prune fails


@dataclass(frozen=True)
class Pruned:
    """What a prune removed (or, with ``dry_run``, would remove): rows by table, and whole partitions."""

    cut: float  # predictions before this go
    history_cut: float | None  # histograms, reports and canary events before this go (None: kept forever)
    dry_run: bool
    predictions: int = 0  # rows of predictions deleted, and the predictions of the batches deleted
    batches: int = 0  # rows of prediction_batches deleted
    partitions: tuple[str, ...] = ()  # dropped whole (Postgres)
    partition_rows: int = 0  # the rows of those partitions: counted by a dry run, estimated by Postgres otherwise
    feedback: int = 0
    histograms: int = 0
    reports: int = 0  # drift and experiment reports
    canary_events: int = 0
    seconds: float = 0.0
    batches_run: int = field(default=0)  # delete transactions (each at most batch_rows rows)
    drop_seconds: float = 0.0  # of ``seconds``: the transactions that dropped the partitions


class Retention:
    """Prunes the store's tables (see the module docstring)."""

    def __init__(self, database: Database) -> None:
        self._db = database
        self._drop_seconds = 0.0

    def prune(
        self, cut: float, history_cut: float | None, *, batch_rows: int = 10_000, dry_run: bool = False
    ) -> Pruned:
        """Remove (``dry_run``: count) the predictions before ``cut`` and their feedback, and the histograms,
        reports and canary events before ``history_cut``."""
        started = time.perf_counter()
        counter = _Deleter(self._db, batch_rows, dry_run)
        if self._db.is_sqlite:
            predictions = counter.rows_of_sqlite(tables.predictions, cut)
            batches, batch_predictions = counter.batches_of_sqlite(cut)
            dropped: tuple[str, ...] = ()
            partition_rows, drop_seconds = 0, 0.0
            feedback_cut = cut
        else:
            dropped, partition_rows, predictions, batches, batch_predictions = self._postgres(counter, cut)
            drop_seconds = self._drop_seconds
            feedback_cut = day_start(cut)  # a day's partition goes whole: the day of the cut keeps its feedback
        feedback = counter.where(tables.feedback, *_feedback_before(feedback_cut))
        histograms = reports = events = 0
        if history_cut is not None:
            histograms = counter.where(
                tables.feature_histograms, tables.feature_histograms.c.minute < history_cut // 60
            )
            for table in (tables.drift_reports, tables.experiment_reports):
                reports += counter.where(table, table.c.created_at < history_cut)
            events = counter.where(tables.canary_events, tables.canary_events.c.ts < history_cut)
        return Pruned(
            cut, history_cut, dry_run, predictions + batch_predictions, batches, dropped, partition_rows, feedback,
            histograms, reports, events, time.perf_counter() - started, counter.transactions, drop_seconds,
        )  # fmt: skip

    def _postgres(self, counter: _Deleter, cut: float) -> tuple[tuple[str, ...], int, int, int, int]:
        """Drop the partitions wholly before ``cut``; delete the old rows of the legacy and DEFAULT ones."""
        dropped: list[str] = []
        partition_rows = predictions = batches = batch_predictions = 0
        self._drop_seconds = 0.0
        for table in TABLES:
            with self._db.reading(f"cannot list the partitions of {table}") as conn:
                found = partitions_of(conn, table)
            old = [p for p in found if p.upper is not None and p.upper <= cut]
            dropping = time.perf_counter()
            rows = self._drop(old, counter.dry_run)
            self._drop_seconds += time.perf_counter() - dropping
            partition_rows += rows if table == "predictions" else 0
            dropped += [p.name for p in old]
            for p in found:
                if p not in old and (p.default or p.lower is None):  # DEFAULT and legacy: any day, row by row
                    part = sa.table(p.name, sa.column("ts"), sa.column("n_rows"))
                    if table == "predictions":
                        predictions += counter.where(part, part.c.ts < cut)
                    else:
                        batch_predictions += counter.sum_of(part, part.c.n_rows, part.c.ts < cut)
                        batches += counter.where(part, part.c.ts < cut)
        return tuple(dropped), partition_rows, predictions, batches, batch_predictions

    def _drop(self, partitions: list[Partition], dry_run: bool) -> int:
        """Drop ``partitions`` in one transaction (``dry_run``: count their rows); their rows, counted exactly by a
        dry run, Postgres's estimate otherwise (counting would read them)."""
        if not partitions:
            return 0
        names = [p.name for p in partitions]
        if dry_run:
            with self._db.reading(f"cannot count the rows of {names[0]}") as conn:
                return sum(int(conn.exec_driver_sql(f'SELECT count(*) FROM "{n}"').scalar_one()) for n in names)  # noqa: S608
        estimate = sa.text("SELECT coalesce(sum(greatest(reltuples, 0)), 0)::bigint FROM pg_class WHERE relname IN :n")
        for attempt in range(DROP_ATTEMPTS):
            try:
                with self._db.writing(f"cannot drop the partitions {names[0]} to {names[-1]}") as conn:
                    rows = int(conn.execute(estimate.bindparams(sa.bindparam("n", expanding=True)), {"n": names})
                               .scalar_one())  # fmt: skip
                    conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
                    for name in names:
                        conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{name}"')  # another prune may have dropped it
                return rows
            except StoreError as exc:
                if "lock timeout" not in exc.message or attempt == DROP_ATTEMPTS - 1:
                    raise
        return 0


def _feedback_before(cut: float) -> tuple[sa.ColumnElement[bool], ...]:
    """The feedback of predictions made before ``cut``: ids of version 7 below the cut's time prefix."""
    ms = f"{max(0, int(cut * 1000)):012x}"
    pid = tables.feedback.c.prediction_id
    return pid < f"{ms[:8]}-{ms[8:]}", sa.func.substr(pid, 15, 1) == "7"


class _Deleter:
    """Batched deletes (or counts, in a dry run), each batch its own transaction in the writers' turn."""

    def __init__(self, database: Database, batch_rows: int, dry_run: bool) -> None:
        self._db = database
        self.batch_rows = batch_rows
        self.dry_run = dry_run
        self.transactions = 0
        self._row = "rowid" if database.is_sqlite else "ctid"

    def where(self, table: sa.TableClause, *condition: sa.ColumnElement[bool]) -> int:
        """Delete the rows of ``table`` matching ``condition``, ``batch_rows`` at a time; how many."""
        if self.dry_run:
            return self._count(sa.select(sa.func.count()).select_from(table).where(*condition), table.name)
        row: sa.ColumnClause[Any] = sa.column(self._row)
        picked = sa.select(row).select_from(table).where(*condition).limit(self.batch_rows)
        if self._db.is_sqlite:
            delete = sa.delete(table).where(row.in_(picked.scalar_subquery()))
        else:  # ctid = ANY(ARRAY(...)): a TID scan of the rows picked
            delete = sa.delete(table).where(row == sa.any_(sa.func.array(picked.scalar_subquery())))
        total = 0
        while True:
            with self._yielding(), self._db.writing(f"cannot prune {table.name}") as conn:
                n = conn.execute(delete).rowcount
            self.transactions += 1
            total += n
            if n < self.batch_rows:
                return total

    @contextlib.contextmanager
    def _yielding(self) -> Iterator[None]:
        """On SQLite, after a delete, leave the file's write lock to the service's writers for as long as the delete
        held it: they wait for one short transaction at a time, never for a run of them."""
        started = time.monotonic()
        yield
        if self._db.is_sqlite:
            held = time.monotonic() - started
            # The pages the delete freed are copied back from the WAL here, by the prune (a passive checkpoint waits
            # for no one), rather than by whichever of the service's commits next passes SQLite's auto-checkpoint.
            with self._db.reading("cannot checkpoint the prune's deletes") as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)")
            time.sleep(min(1.0, held))

    def sum_of(self, table: sa.TableClause, column: sa.ColumnClause[int], *condition: sa.ColumnElement[bool]) -> int:
        """The sum of ``column`` over the rows ``where`` would delete (read before they go)."""
        query = sa.select(sa.func.coalesce(sa.func.sum(column), 0)).select_from(table).where(*condition)
        return self._count(query, table.name)

    def _count(self, query: sa.Select[Any], name: str) -> int:
        with self._db.reading(f"cannot count the rows of {name} to prune") as conn:
            return int(conn.execute(query).scalar_one())

    def rows_of_sqlite(self, table: sa.Table, cut: float) -> int:
        """SQLite: delete ``table``'s rows before ``cut`` by rowid ranges read beforehand; how many."""
        return sum(n for n, _ in self._ranges(table, cut))

    def batches_of_sqlite(self, cut: float) -> tuple[int, int]:
        """SQLite: delete the batches before ``cut``, about ``batch_rows`` predictions a transaction; (batches, their
        predictions)."""
        done = self._ranges(tables.prediction_batches, cut, weight=tables.prediction_batches.c.n_rows)
        return sum(n for n, _ in done), sum(w for _, w in done)

    def _ranges(self, table: sa.Table, cut: float, weight: sa.Column[int] | None = None) -> list[tuple[int, int]]:
        """Read the next rowids of rows before ``cut`` (``batch_rows`` rows, or rows weighing that much), delete that
        rowid range's rows before ``cut`` in one short transaction, go on from there; (rows, weight) per batch."""
        rowid: sa.ColumnClause[int] = sa.column("rowid")
        picked = [rowid] if weight is None else [rowid, weight]
        done: list[tuple[int, int]] = []
        after = -1
        while True:
            query = sa.select(*picked).select_from(table).where(rowid > after, table.c.ts < cut).order_by(rowid)
            with self._db.reading(f"cannot read the rows of {table.name} to prune") as conn:
                found = conn.execute(query.limit(self.batch_rows)).all()
            if weight is not None:  # a batch row holds many predictions: stop at batch_rows of them
                total, end = 0, 0
                while end < len(found) and total < self.batch_rows:
                    total += int(found[end][1])
                    end += 1
                found = found[:end]
            if not found:
                return done
            first, last = int(found[0][0]), int(found[-1][0])
            weight_sum = sum(int(r[1]) for r in found) if weight is not None else len(found)
            if self.dry_run:
                n = len(found)
            else:
                delete = sa.delete(table).where(rowid >= first, rowid <= last, table.c.ts < cut)
                with self._yielding(), self._db.writing(f"cannot prune {table.name}") as conn:
                    n = conn.execute(delete).rowcount
                self.transactions += 1
            done.append((n, weight_sum))
            after = last
