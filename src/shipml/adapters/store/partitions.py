"""Daily partitions of the predictions on Postgres: ``predictions`` and ``prediction_batches`` by day of ``ts``.

Postgres's declarative partitioning does the work: each table is ``PARTITION BY RANGE (ts)`` with one partition
per UTC day (``predictions_p20261207``: ``ts`` from that midnight to the next), a DEFAULT partition
(``predictions_default``) that takes a row for a day without its partition, so a write never fails for want of
one, and, in a store made before partitions, the old table attached as ``predictions_legacy`` (every row before
the migration's cut-over day; see migration 10 in migrations.py). Retention drops whole days (``drop_before``).

Days are created ahead (``ensure``: today and ``ahead_days`` more) by the service's maintenance job and by
``shipml store prune``, under the store's lease ``store:partitions``. A new day is made as a plain table and then
attached (``ATTACH PARTITION`` takes a lock that lets reads and writes of the parent go on, where ``CREATE TABLE
... PARTITION OF`` would stop them); rows the DEFAULT partition already holds for that day are moved into it in
the same transaction. DDL waits at most ``LOCK_TIMEOUT`` for its lock, so a long read never makes the writers
queue behind it: the next run tries again.

SQLite has no partitions: every method here is for Postgres only (``Partitions.applies``).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from shipml.errors import StoreError

if TYPE_CHECKING:
    from shipml.adapters.store.engine import Database

DAY_S = 86_400
# The partitioned tables and the column their id is in (the primary key is (id, ts): a partitioned table's key
# must hold the partition column).
TABLES: dict[str, str] = {"predictions": "id", "prediction_batches": "first_id"}
LOCK_TIMEOUT = "2s"
LEASE = "store:partitions"

_BOUND = re.compile(r"FOR VALUES FROM \((?P<low>[^)]*)\) TO \((?P<high>[^)]*)\)")


@dataclass(frozen=True)
class Partition:
    """One partition of ``table``: rows with ``lower <= ts < upper`` (None: unbounded; both None: DEFAULT)."""

    table: str
    name: str
    lower: float | None
    upper: float | None
    default: bool = False


def day_start(ts: float) -> float:
    """The UTC midnight at or before ``ts``."""
    return float(int(ts // DAY_S) * DAY_S)


def day_name(table: str, day: float) -> str:
    """``predictions_p20261207``: the partition of ``table`` for the UTC day starting at ``day``."""
    return f"{table}_p{datetime.fromtimestamp(day, UTC):%Y%m%d}"


def is_partitioned(conn: Connection, table: str) -> bool:
    """Whether ``table`` is a partitioned table (Postgres's relkind 'p')."""
    kind = conn.execute(sa.text("SELECT relkind FROM pg_class WHERE oid = to_regclass(:t)"), {"t": table}).scalar()
    return kind == "p"


def partitions_of(conn: Connection, table: str) -> list[Partition]:
    """The partitions of ``table``, the DEFAULT one last, the others by their lower bound."""
    rows = conn.execute(
        sa.text(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass(:t)"
        ),
        {"t": table},
    ).all()
    found = []
    for name, bound in rows:
        match = _BOUND.search(str(bound))
        if match is None:
            found.append(Partition(table, str(name), None, None, default=True))
            continue
        found.append(Partition(table, str(name), _bound(match["low"]), _bound(match["high"])))
    return sorted(found, key=lambda p: (p.default, -1e300 if p.lower is None else p.lower))


def _bound(text: str) -> float | None:
    text = text.strip().strip("'")
    return None if text in ("MINVALUE", "MAXVALUE") else float(text)


def attach_day(conn: Connection, table: str, day: float) -> str | None:
    """Make the partition of ``table`` for the day starting at ``day`` (a table attached to the parent), moving in
    the rows the DEFAULT partition holds for that day; its name (None: another process made it first). Call inside
    a transaction."""
    name, parent, default = day_name(table, day), table, f"{table}_default"
    low, high = repr(day), repr(day + DAY_S)
    conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:n))"), {"n": "shipml-partition:" + name})
    if to_regclass(conn, name):
        return None
    conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
    conn.exec_driver_sql(f'CREATE TABLE "{name}" (LIKE "{parent}" INCLUDING DEFAULTS INCLUDING CONSTRAINTS)')
    # The CHECK lets ATTACH skip its scan of the new table (Postgres's documented way); dropped once attached.
    conn.exec_driver_sql(
        f'ALTER TABLE "{name}" ADD CONSTRAINT "{name}_day" CHECK (ts IS NOT NULL AND ts >= {low} AND ts < {high})'
    )
    if to_regclass(conn, default):
        # Rows written while the day had no partition: moved to it, so the DEFAULT lets go of the day.
        moved = f'DELETE FROM "{default}" WHERE ts >= {low} AND ts < {high} RETURNING *'  # noqa: S608 - ours
        conn.exec_driver_sql(f'WITH moved AS ({moved}) INSERT INTO "{name}" SELECT * FROM moved')  # noqa: S608
    conn.exec_driver_sql(f'ALTER TABLE "{parent}" ATTACH PARTITION "{name}" FOR VALUES FROM ({low}) TO ({high})')
    conn.exec_driver_sql(f'ALTER TABLE "{name}" DROP CONSTRAINT "{name}_day"')
    return name


def to_regclass(conn: Connection, name: str) -> bool:
    """Whether a table (or index) ``name`` exists."""
    return conn.execute(sa.text("SELECT to_regclass(:n) IS NOT NULL"), {"n": name}).scalar() is True


class Partitions:
    """The daily partitions of the store's predictions (Postgres; on SQLite ``applies`` is False)."""

    def __init__(self, database: Database) -> None:
        self._db = database

    @property
    def applies(self) -> bool:
        return not self._db.is_sqlite

    def of(self, table: str = "predictions") -> list[Partition]:
        """The partitions of ``table`` (empty on SQLite)."""
        if not self.applies:
            return []
        with self._db.reading(f"cannot list the partitions of {table}") as conn:
            return partitions_of(conn, table)

    def ensure(self, ahead_days: int, *, now: float | None = None) -> list[str]:
        """Create the missing partitions from today (UTC) to ``ahead_days`` days ahead, of every partitioned table;
        the names created (empty on SQLite, or when all exist). Days the old table (``*_legacy``) covers are
        skipped."""
        if not self.applies:
            return []
        today = day_start(time.time() if now is None else now)
        created = []
        for table in TABLES:
            known = self.of(table)
            legacy_until = max((p.upper for p in known if p.lower is None and p.upper is not None), default=None)
            have = {p.lower for p in known if p.lower is not None}
            for i in range(ahead_days + 1):
                day = today + i * DAY_S
                if day in have or (legacy_until is not None and day < legacy_until):
                    continue
                with self._db.writing(f"cannot create the partition {day_name(table, day)}") as conn:
                    name = attach_day(conn, table, day)
                if name is not None:
                    created.append(name)
        return created

    def default_rows(self) -> int:
        """Rows the DEFAULT partitions hold now (written for a day without its partition)."""
        if not self.applies:
            return 0
        total = 0
        with self._db.reading("cannot count the rows of the default partitions") as conn:
            for table in TABLES:
                if to_regclass(conn, f"{table}_default"):
                    total += int(conn.exec_driver_sql(f'SELECT count(*) FROM "{table}_default"').scalar_one())  # noqa: S608
        return total


class Coverage:
    """The span of time this process knows the daily partitions of ``predictions`` to cover, to count the rows
    written outside it (the DEFAULT partition took them): read from the catalog at most every ``REFRESH_S``, and
    again when a row falls outside (another process may have made the day since)."""

    REFRESH_S = 60.0

    def __init__(self, database: Database) -> None:
        self._db = database
        self._span: tuple[float, float] | None = None
        self._read_at = -math.inf

    def outside(self, stamps: Sequence[tuple[float, int]]) -> int:
        """How many of the rows written, ``(ts, rows)`` each, fall on a day without its partition."""
        if not stamps:
            return 0
        n = self._count(stamps)
        if n and time.monotonic() - self._read_at > self.REFRESH_S:
            self._refresh()
            n = self._count(stamps)
        return n

    def _count(self, stamps: Sequence[tuple[float, int]]) -> int:
        if self._span is None:
            return sum(rows for _, rows in stamps)
        low, high = self._span
        return sum(rows for ts, rows in stamps if not low <= ts < high)

    def _refresh(self) -> None:
        self._read_at = time.monotonic()
        try:
            with self._db.reading("cannot list the partitions of predictions") as conn:
                found = [p for p in partitions_of(conn, "predictions") if not p.default]
        except StoreError:  # the commit is done: counting goes on with what was known
            return
        if not found:
            self._span = None
            return
        low = -math.inf if any(p.lower is None for p in found) else min(p.lower or 0.0 for p in found)
        self._span = (low, max(p.upper or math.inf for p in found))
