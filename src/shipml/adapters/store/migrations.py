"""Versioned migrations of the store's tables, applied once each, safe with any number of processes.

``migrate`` runs at open, never at model load. It holds a lock that every process opening the same
database takes in turn (Postgres: a transaction-scoped advisory lock; SQLite: the ``<db>.writelock``
flock that the store's writers already take turns on, plus ``BEGIN IMMEDIATE``), reads
``schema_version`` and applies the missing migrations in the same transaction, so a crash leaves
either all of a migration or none of it. DDL also says ``IF NOT EXISTS``: a database made before
``schema_version`` existed (the first store, with a ``predictions`` table and ``f_*`` columns) goes
through the same steps and keeps its rows.

A migration may also have a ``prepare`` step, run before that transaction on Postgres (autocommit, under a
session advisory lock): work that must not hold the tables' locks, such as ``CREATE INDEX CONCURRENTLY`` or a
``VALIDATE CONSTRAINT``, while the previous release keeps writing. It is idempotent: run again at each open
until its migration is applied.

A migration is append-only: never edit one that has shipped; add the next number.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.schema import CreateIndex, CreateTable

from shipml.adapters.store import tables
from shipml.adapters.store.partitions import DAY_S, TABLES, attach_day, day_start, is_partitioned, to_regclass

# pg_advisory_xact_lock key of the store's migrations: "shipml" in ASCII, one constant for every process.
PG_MIGRATION_LOCK = 0x73_68_69_70_6D_6C


@dataclass(frozen=True)
class Migration:
    """One numbered step; ``apply`` runs inside the migration transaction, under the lock."""

    version: int
    name: str
    apply: Callable[[Connection], None]
    prepare: Callable[[Connection], None] | None = None  # Postgres, autocommit, before the transaction


def _base_tables(conn: Connection) -> None:
    # The first store's shape, frozen here (tables.py describes the latest one).
    meta = sa.MetaData()
    predictions = sa.Table(
        "predictions",
        meta,
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("version", sa.String(20), nullable=False),
        sa.Column("variant", sa.String(50), nullable=False),
        sa.Column("features", sa.Text, nullable=False),
        sa.Column("outputs", sa.Text, nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=False),
    )
    feedback = sa.Table(
        "feedback",
        meta,
        sa.Column("prediction_id", sa.String(36), primary_key=True),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("label", sa.String(200)),
        sa.Column("value", sa.Float),
    )
    conn.execute(CreateTable(predictions, if_not_exists=True))
    conn.execute(CreateTable(feedback, if_not_exists=True))
    conn.execute(CreateIndex(sa.Index("ix_predictions_ts", predictions.c.ts), if_not_exists=True))


def _typed_columns_and_catalog(conn: Connection) -> None:
    dialect = conn.dialect
    text, double = sa.Text().compile(dialect=dialect), sa.Float().compile(dialect=dialect)
    wanted = [
        ("role", f"{text} NOT NULL DEFAULT 'primary'"),
        ("routing_key", text),
        ("schema_sha256", f"{text} NOT NULL DEFAULT ''"),
        ("label", text),
        ("score", double),
        *[(name, double) for name in tables.NUMERIC_COLUMNS],
        *[(name, text) for name in tables.CATEGORICAL_COLUMNS],
    ]
    # A store of the first shape has f_* columns beside these; they stay (old rows keep them), unused.
    existing = {c["name"] for c in sa.inspect(conn).get_columns("predictions")}
    for name, ddl in wanted:
        if name not in existing:
            conn.exec_driver_sql(f'ALTER TABLE predictions ADD COLUMN "{name}" {ddl}')
    meta = sa.MetaData()
    catalog = sa.Table(
        "feature_catalog",
        meta,
        sa.Column("schema_sha256", sa.Text, primary_key=True),
        sa.Column("position", sa.Integer, primary_key=True),
        sa.Column("feature", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("slot", sa.Text),
    )
    conn.execute(CreateTable(catalog, if_not_exists=True))
    predictions = sa.Table("predictions", meta, sa.Column("model"), sa.Column("variant"), sa.Column("ts"))
    index = sa.Index("ix_predictions_model_variant_ts", predictions.c.model, predictions.c.variant, predictions.c.ts)
    conn.execute(CreateIndex(index, if_not_exists=True))
    # Every read names a model; a second index on ts alone cost the writer a quarter of its rows per
    # second on SQLite (measured, 512-row batches), so the composite index replaces it.
    conn.exec_driver_sql("DROP INDEX IF EXISTS ix_predictions_ts")


def _feedback_label_text(conn: Connection) -> None:
    # Correctness review M3: a label over 200 characters failed on Postgres. SQLite never enforced it.
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("ALTER TABLE feedback ALTER COLUMN label TYPE TEXT")


def _row_status(conn: Connection) -> None:
    # Reliability case 17: a refused record of a batch is logged too, with its status (tables.py). A
    # constant default makes this a catalog-only change on both dialects (Postgres 11+ and SQLite do not
    # rewrite the table), and every existing row reads as "ok": until now only predictions were logged.
    conn.exec_driver_sql("ALTER TABLE predictions ADD COLUMN status TEXT NOT NULL DEFAULT 'ok'")


def _prediction_batches(conn: Connection) -> None:
    # Issue 10: a chunk of a batch request logged as one row of columns (batches.py), not a row per record.
    meta = sa.MetaData()
    table = sa.Table(
        "prediction_batches",
        meta,
        sa.Column("first_id", sa.String(36), primary_key=True),
        sa.Column("last_id", sa.String(36), nullable=False),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("version", sa.String(20), nullable=False),
        sa.Column("variant", sa.String(50), nullable=False),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("schema_sha256", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("n_rows", sa.Integer, nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
    )
    conn.execute(CreateTable(table, if_not_exists=True))
    index = sa.Index("ix_prediction_batches_model_variant_ts", table.c.model, table.c.variant, table.c.ts)
    conn.execute(CreateIndex(index, if_not_exists=True))


def _feature_histograms(conn: Connection) -> None:
    # Issue 10: per-minute histograms on the profile's buckets, kept by the writer (histograms.py).
    meta = sa.MetaData()
    histograms = sa.Table(
        "feature_histograms",
        meta,
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("minute", sa.Integer, primary_key=True),
        sa.Column("version", sa.String(20), primary_key=True),
        sa.Column("variant", sa.String(50), primary_key=True),
        sa.Column("role", sa.String(20), primary_key=True),
        sa.Column("writer", sa.String(32), primary_key=True),
        sa.Column("layout_sha", sa.String(64), nullable=False),
        sa.Column("n_rows", sa.Integer, nullable=False),
        sa.Column("counts", sa.LargeBinary, nullable=False),
    )
    layouts = sa.Table(
        "histogram_layouts",
        meta,
        sa.Column("layout_sha", sa.String(64), primary_key=True),
        sa.Column("layout", sa.Text, nullable=False),
    )
    conn.execute(CreateTable(histograms, if_not_exists=True))
    conn.execute(CreateTable(layouts, if_not_exists=True))


def _reports_and_leases(conn: Connection) -> None:
    # Issue 10: the monitoring job's stored reports, and the lease that keeps it to one runner.
    meta = sa.MetaData()
    reports = sa.Table(
        "drift_reports",
        meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("since", sa.Float, nullable=False),
        sa.Column("until", sa.Float, nullable=False),
        sa.Column("verdict", sa.String(30), nullable=False),
        sa.Column("report", sa.Text, nullable=False),
    )
    leases = sa.Table(
        "leases",
        meta,
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("holder", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    conn.execute(CreateTable(reports, if_not_exists=True))
    conn.execute(CreateTable(leases, if_not_exists=True))
    index = sa.Index("ix_drift_reports_model_created", reports.c.model, reports.c.created_at)
    conn.execute(CreateIndex(index, if_not_exists=True))


def _experiments_and_canaries(conn: Connection) -> None:
    # Issue 11: `shipml ab report`'s stored reports; the canary controller's state and events.
    meta = sa.MetaData()
    reports = sa.Table(
        "experiment_reports",
        meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("since", sa.Float, nullable=False),
        sa.Column("until", sa.Float, nullable=False),
        sa.Column("verdict", sa.String(30), nullable=False),
        sa.Column("report", sa.Text, nullable=False),
    )
    canaries = sa.Table(
        "canaries",
        meta,
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("state", sa.Text, nullable=False),
    )
    events = sa.Table(
        "canary_events",
        meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("event", sa.Text, nullable=False),
    )
    for table in (reports, canaries, events):
        conn.execute(CreateTable(table, if_not_exists=True))
    index = sa.Index("ix_experiment_reports_model_created", reports.c.model, reports.c.created_at)
    conn.execute(CreateIndex(index, if_not_exists=True))
    conn.execute(CreateIndex(sa.Index("ix_canary_events_model_ts", events.c.model, events.c.ts), if_not_exists=True))


def _webhook_notifications(conn: Connection) -> None:
    # Issue 16 (L5): what the webhook notifier sent, in the store rather than in each host's home.
    meta = sa.MetaData()
    notifications = sa.Table(
        "webhook_notifications",
        meta,
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("verdict", sa.String(30), nullable=False),
        sa.Column("dropped", sa.Boolean, nullable=False),
        sa.Column("sent_at", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    conn.execute(CreateTable(notifications, if_not_exists=True))


def _legacy_check(table: str) -> str:
    return f"{table}_legacy_until"


def _legacy_cutover(conn: Connection, table: str) -> tuple[float, bool] | None:
    """The cut-over time of ``table``'s CHECK (ts < cut-over) made by the prepare step, and whether it is valid."""
    found = conn.execute(
        sa.text(
            "SELECT pg_get_constraintdef(oid), convalidated FROM pg_constraint "
            "WHERE conname = :n AND conrelid = to_regclass(:t)"
        ),
        {"n": _legacy_check(table), "t": table},
    ).first()
    if found is None:
        return None
    number = re.search(r"<\s*\(?'?([0-9.e+]+)", str(found[0]))
    return (float(number.group(1)), bool(found[1])) if number else None


def _prepare_daily_partitions(conn: Connection) -> None:
    """Before migration 10, while the previous release writes on: a unique index on (id, ts) built concurrently,
    and a validated CHECK (ts < cut-over), with the cut-over the UTC midnight two days ahead. With both,
    attaching the old table as a partition (migration 10) neither builds an index nor scans a row."""
    conn.exec_driver_sql("SET statement_timeout = 0")  # on a big table the build takes its time, off the writers'
    try:
        for table, key in TABLES.items():
            if not to_regclass(conn, table) or is_partitioned(conn, table):
                continue
            index = f"{table}_{key}_ts_key"
            valid = conn.execute(
                sa.text("SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(:i)"), {"i": index}
            ).scalar()
            if valid is False:  # a build that was interrupted leaves an invalid index: made again
                conn.exec_driver_sql(f'DROP INDEX CONCURRENTLY IF EXISTS "{index}"')
            conn.exec_driver_sql(f'CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS "{index}" ON "{table}" ("{key}", ts)')
            check = _legacy_check(table)
            found = _legacy_cutover(conn, table)
            if found is not None and found[0] < time.time() + 3600:  # an old attempt's cut-over is too close
                conn.exec_driver_sql(f'ALTER TABLE "{table}" DROP CONSTRAINT "{check}"')
                found = None
            if found is None:
                cutover = day_start(time.time()) + 2 * DAY_S
                conn.exec_driver_sql(
                    f'ALTER TABLE "{table}" ADD CONSTRAINT "{check}" CHECK (ts < {cutover!r}) NOT VALID'
                )
            conn.exec_driver_sql(f'ALTER TABLE "{table}" VALIDATE CONSTRAINT "{check}"')  # a scan; writes go on
    finally:
        conn.exec_driver_sql("RESET statement_timeout")


def _daily_partitions(conn: Connection) -> None:
    # Issue 18: predictions and their batches partitioned by UTC day on Postgres (partitions.py), so retention
    # drops whole days. The old table becomes the partition ``<table>_legacy`` of every time before the
    # cut-over (no row rewritten: the prepare step made its index and CHECK), or is dropped when empty; a
    # DEFAULT partition takes the rows of a day without its partition. SQLite keeps its tables.
    if conn.dialect.name != "postgresql":
        return
    for table, key in TABLES.items():
        if is_partitioned(conn, table):
            continue
        legacy = f"{table}_legacy"
        conn.exec_driver_sql(f'ALTER TABLE "{table}" RENAME TO "{legacy}"')
        indexes = conn.execute(sa.text("SELECT indexname FROM pg_indexes WHERE tablename = :t"), {"t": legacy})
        for (index,) in indexes.all():
            conn.exec_driver_sql(f'ALTER INDEX "{index}" RENAME TO "{index.replace(table, legacy, 1)}"')
        conn.exec_driver_sql(f'CREATE TABLE "{table}" (LIKE "{legacy}" INCLUDING DEFAULTS) PARTITION BY RANGE (ts)')
        conn.exec_driver_sql(f'ALTER TABLE "{table}" ADD CONSTRAINT "{table}_pkey" PRIMARY KEY ("{key}", ts)')
        conn.exec_driver_sql(f'CREATE INDEX "ix_{table}_model_variant_ts" ON "{table}" (model, variant, ts)')
        first_day = day_start(time.time())
        if conn.exec_driver_sql(f'SELECT EXISTS (SELECT 1 FROM "{legacy}")').scalar():  # noqa: S608 - our name
            found = _legacy_cutover(conn, table)
            if found is None:  # not prepared (cannot happen through migrate): the attach then scans, still no rewrite
                latest = conn.exec_driver_sql(f'SELECT max(ts) FROM "{legacy}"').scalar_one()  # noqa: S608
                cutover = max(day_start(float(latest)) + DAY_S, first_day + 2 * DAY_S)
            else:
                cutover = found[0]
            # Its key becomes (id, ts), the parent's, on the index the prepare step built: no index built here.
            index = f"{legacy}_{key}_ts_key"
            if not to_regclass(conn, index):
                conn.exec_driver_sql(f'CREATE UNIQUE INDEX "{index}" ON "{legacy}" ("{key}", ts)')
            conn.exec_driver_sql(
                f'ALTER TABLE "{legacy}" DROP CONSTRAINT IF EXISTS "{legacy}_pkey", '
                f'ADD CONSTRAINT "{legacy}_pkey" PRIMARY KEY USING INDEX "{index}"'
            )
            conn.exec_driver_sql(
                f'ALTER TABLE "{table}" ATTACH PARTITION "{legacy}" FOR VALUES FROM (MINVALUE) TO ({cutover!r})'
            )
            first_day = cutover
        else:
            conn.exec_driver_sql(f'DROP TABLE "{legacy}"')
        conn.exec_driver_sql(f'CREATE TABLE "{table}_default" PARTITION OF "{table}" DEFAULT')
        for i in range(2):  # the first days; the maintenance job and `shipml store prune` make the days ahead
            attach_day(conn, table, first_day + i * DAY_S)
        conn.exec_driver_sql("SET LOCAL lock_timeout = 0")  # attach_day's bound is for the service's runs


def _routing_announcements(conn: Connection) -> None:
    # Issue 19: replicas compare what decides their routing.
    meta = sa.MetaData()
    announcements = sa.Table(
        "routing_announcements",
        meta,
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("process", sa.String(64), primary_key=True),
        sa.Column("fingerprint", sa.String(32), nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    conn.execute(CreateTable(announcements, if_not_exists=True))


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "predictions and feedback", _base_tables),
    Migration(2, "typed outputs, role, routing key, feature slots and catalog", _typed_columns_and_catalog),
    Migration(3, "feedback label as text", _feedback_label_text),
    Migration(4, "row status", _row_status),
    Migration(5, "prediction batches", _prediction_batches),
    Migration(6, "feature histograms", _feature_histograms),
    Migration(7, "drift reports and leases", _reports_and_leases),
    Migration(8, "experiment reports and canaries", _experiments_and_canaries),
    Migration(9, "webhook notifications", _webhook_notifications),
    Migration(10, "daily partitions on Postgres", _daily_partitions, _prepare_daily_partitions),
    Migration(11, "routing announcements", _routing_announcements),
)
LATEST = MIGRATIONS[-1].version


def migrate(engine: Engine, lock_path: Path | None) -> list[int]:
    """Apply the migrations this database lacks; the versions applied now (empty: it was up to date).

    ``lock_path`` is the SQLite database's writer lock file (None for Postgres)."""
    if engine.dialect.name == "postgresql":
        _prepare_missing(engine)
        with engine.begin() as conn:
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_MIGRATION_LOCK})
            return _apply_missing(conn)
    with exclusive(lock_path), engine.connect() as raw:
        # pysqlite opens transactions itself only before DML; take the write lock for DDL too, at once.
        conn = raw.execution_options(isolation_level="AUTOCOMMIT")
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            applied = _apply_missing(conn)
        except BaseException:
            conn.exec_driver_sql("ROLLBACK")
            raise
        conn.exec_driver_sql("COMMIT")
        return applied


def _prepare_missing(engine: Engine) -> None:
    """Run the prepare steps of the migrations not yet applied (Postgres), one process at a time."""
    with engine.connect() as raw:
        conn = raw.execution_options(isolation_level="AUTOCOMMIT")
        done: set[int] = set()
        if to_regclass(conn, "schema_version"):
            done = set(conn.execute(sa.select(tables.schema_version.c.version)).scalars())
        pending = [m for m in MIGRATIONS if m.prepare is not None and m.version not in done]
        if not pending:
            return
        conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": PG_MIGRATION_LOCK})
        try:
            for m in pending:
                assert m.prepare is not None  # noqa: S101 - filtered above
                m.prepare(conn)
        finally:
            conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": PG_MIGRATION_LOCK})


def _apply_missing(conn: Connection) -> list[int]:
    conn.execute(CreateTable(tables.schema_version, if_not_exists=True))
    done = set(conn.execute(sa.select(tables.schema_version.c.version)).scalars())
    applied = []
    for m in MIGRATIONS:
        if m.version in done:
            continue
        m.apply(conn)
        conn.execute(sa.insert(tables.schema_version).values(version=m.version, name=m.name, applied_at=time.time()))
        applied.append(m.version)
    return applied


@contextlib.contextmanager
def exclusive(lock_path: Path | None) -> Iterator[None]:
    """Hold the SQLite file's writer lock on a descriptor of our own: a flock excludes other open file
    descriptions only, so sharing the writer thread's descriptor would let both threads in at once."""
    if lock_path is None:
        yield
        return
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the last descriptor of the description releases the lock
