"""The prediction store: every prediction and its feedback, in SQLite (WAL) or Postgres.

Rows are written by one writer thread in batches (group commit). In ``commit``
durability the caller waits for the commit of its row; in ``async`` it does
not, and a full queue is reported at once so the service can shed load.
Features are stored both as JSON and as one typed column per feature
(``f_<name>``), so the monitoring job reads windows back fast and typed.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import fcntl
import itertools
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from shipml.core.schema import FeatureSchema
from shipml.errors import ShipmlError

_SAFE = re.compile(r"[^a-z0-9_]")
LOCK_WAIT_S = 30.0  # give up on a locked SQLite file after this long
LOCK_RETRY_S = 0.0005
MAX_ROWS_PER_STATEMENT = 512


class StoreError(ShipmlError):
    """The prediction store cannot be opened or written."""


class StoreFull(StoreError):
    """The async queue is full: the caller should shed load (503)."""


@dataclass(frozen=True)
class PredictionRow:
    id: str
    ts: float
    model: str
    version: str
    variant: str
    features: dict[str, Any]
    outputs: dict[str, Any]
    latency_ms: float


def feature_column(name: str) -> str:
    """The typed column of a feature: ``f_`` + a lower-case, SQL-safe form of its name."""
    return "f_" + _SAFE.sub("_", name.lower())[:55]


class PredictionStore:
    """Tables ``predictions`` and ``feedback`` behind one SQLAlchemy engine."""

    def __init__(self, uri: str, *, sqlite_synchronous: str = "FULL") -> None:
        self.uri = uri
        self.is_sqlite = uri.startswith("sqlite")
        self._lock_path: Path | None = None  # SQLite file: writers of all processes take turns on it
        self._lock_fd: int | None = None
        try:
            if self.is_sqlite:
                path = uri.removeprefix("sqlite:///")
                if path and path != ":memory:":
                    Path(path).parent.mkdir(parents=True, exist_ok=True)
                    self._lock_path = Path(path + ".writelock")
                self.engine: Engine = sa.create_engine(uri, connect_args={"check_same_thread": False, "timeout": 30})
                sa.event.listen(self.engine, "connect", _sqlite_pragmas(sqlite_synchronous, busy_ms=30_000))
                # The writer does not sleep in SQLite's busy handler (1 ms, then up to 100 ms back-off) when
                # another worker process holds the write lock: it retries every half millisecond itself.
                self.write_engine: Engine = sa.create_engine(
                    uri, connect_args={"check_same_thread": False, "timeout": 0}
                )
                sa.event.listen(self.write_engine, "connect", _sqlite_pragmas(sqlite_synchronous, busy_ms=0))
            else:
                self.engine = sa.create_engine(uri, pool_pre_ping=True)
                self.write_engine = self.engine
        except (ImportError, sa.exc.ArgumentError) as exc:
            hint = " (install the extra: pip install 'shipml[postgres]')" if "psycopg" in str(exc) else ""
            raise StoreError(f"store.uri: cannot open {_redact(uri)}: {exc}{hint}") from None
        self.meta = sa.MetaData()
        self.predictions = sa.Table(
            "predictions",
            self.meta,
            sa.Column("id", sa.String(36), primary_key=True),
            sa.Column("ts", sa.Float, nullable=False, index=True),
            sa.Column("model", sa.String(200), nullable=False),
            sa.Column("version", sa.String(20), nullable=False),
            sa.Column("variant", sa.String(50), nullable=False),
            sa.Column("features", sa.Text, nullable=False),
            sa.Column("outputs", sa.Text, nullable=False),
            sa.Column("latency_ms", sa.Float, nullable=False),
        )
        self.feedback = sa.Table(
            "feedback",
            self.meta,
            sa.Column("prediction_id", sa.String(36), primary_key=True),
            sa.Column("ts", sa.Float, nullable=False),
            sa.Column("label", sa.String(200)),
            sa.Column("value", sa.Float),
        )
        self._typed: dict[str, sa.Column[Any]] = {}
        self._names: list[str] = []
        self._insert_sql: dict[int, str] = {}
        self._insert_width = -1
        try:
            self.meta.create_all(self.engine)
        except sa.exc.OperationalError as exc:
            raise StoreError(f"store.uri: cannot open {_redact(uri)}: {str(exc.orig).strip()}") from None

    def ensure_features(self, schema: FeatureSchema) -> None:
        """Add a typed column for each feature of ``schema`` the table does not have yet."""
        existing = {c["name"] for c in sa.inspect(self.engine).get_columns("predictions")}
        with self.engine.begin() as conn:
            for f in schema.features:
                col = feature_column(f.name)
                kind: sa.types.TypeEngine[Any] = sa.Float() if f.is_numeric else sa.Text()
                if col not in existing:
                    ddl = f'ALTER TABLE predictions ADD COLUMN "{col}" {kind.compile(dialect=self.engine.dialect)}'
                    try:
                        conn.execute(sa.text(ddl))
                    except sa.exc.OperationalError as exc:  # another worker added it first
                        if "duplicate column" not in str(exc).lower():
                            raise
                    existing.add(col)
                self._typed.setdefault(f.name, sa.Column(col, kind))

    def write(self, rows: Sequence[PredictionRow]) -> None:
        """Insert ``rows`` in one transaction, as few multi-row INSERT statements.

        One statement per power-of-two piece of the batch (13 rows: 8 + 4 + 1), not one execution per
        row: the SQLite driver lets go of the GIL at every statement step, and under load each of those
        waits for the serving thread to hand it back (the GIL's switch interval), so a row per step made
        the writer the bottleneck. The statement texts are few, so the driver's statement cache keeps them.
        """
        if not rows:
            return
        typed = list(self._typed.items())
        if self._insert_width != len(typed):
            self._names = [c.name for c in self.predictions.c] + [col.name for _, col in typed]
            self._insert_sql = {}
            self._insert_width = len(typed)
        names = [name for name, _ in typed]
        dumps = orjson.dumps
        payload = []
        for r in rows:
            f = r.features
            payload.append(
                (
                    r.id, r.ts, r.model, r.version, r.variant, dumps(f).decode(), dumps(r.outputs).decode(),
                    r.latency_ms, *[f.get(name) for name in names],
                )
            )  # fmt: skip
        pieces = []
        start = 0
        for size in _pieces(len(payload), self._max_rows_per_statement()):
            flat = tuple(itertools.chain.from_iterable(payload[start : start + size]))
            pieces.append((self._insert_for(size), flat))
            start += size
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                with self._turn(), self.write_engine.begin() as conn:
                    for sql, params in pieces:
                        conn.exec_driver_sql(sql, params)
                return
            except sa.exc.OperationalError as exc:
                if not (self.is_sqlite and "locked" in str(exc.orig)) or time.monotonic() > deadline:
                    raise
                time.sleep(LOCK_RETRY_S)

    @contextlib.contextmanager
    def _turn(self) -> Iterator[None]:
        """Hold the file's writer lock (flock) for one transaction. The store writers of several worker
        processes then queue for SQLite's write lock, each handed it when the last commit ends, instead
        of polling for it; whatever arrives meanwhile goes into the next commit."""
        if self._lock_path is None:
            yield
            return
        if self._lock_fd is None:
            self._lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _max_rows_per_statement(self) -> int:
        # SQLite allows 32,766 bound parameters since 3.32 (999 before); Postgres 65,535. Stay well below.
        limit = 30_000 if not self.is_sqlite or sqlite3.sqlite_version_info >= (3, 32) else 999
        return max(1, min(MAX_ROWS_PER_STATEMENT, limit // len(self._names)))

    def _insert_for(self, n_rows: int) -> str:
        sql = self._insert_sql.get(n_rows)
        if sql is None:
            marker = "?" if self.is_sqlite else "%s"
            one = "(" + ", ".join([marker] * len(self._names)) + ")"
            quoted = ", ".join(f'"{n}"' for n in self._names)
            sql = f"INSERT INTO predictions ({quoted}) VALUES {', '.join([one] * n_rows)}"  # noqa: S608 - names are ours
            self._insert_sql[n_rows] = sql
        return sql

    def add_feedback(self, prediction_id: str, label: str | None, value: float | None) -> bool:
        """Record ground truth for a prediction; False if no such prediction. Later feedback replaces earlier."""
        with self.engine.begin() as conn:
            found = conn.execute(sa.select(self.predictions.c.id).where(self.predictions.c.id == prediction_id)).first()
            if found is None:
                return False
            conn.execute(sa.delete(self.feedback).where(self.feedback.c.prediction_id == prediction_id))
            conn.execute(
                sa.insert(self.feedback).values(prediction_id=prediction_id, ts=time.time(), label=label, value=value)
            )
        return True

    def get(self, prediction_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            marker = "?" if self.is_sqlite else "%s"
            result = conn.exec_driver_sql(f"SELECT * FROM predictions WHERE id = {marker}", (prediction_id,))  # noqa: S608 - fixed text
            row = result.mappings().first()
        return dict(row) if row else None

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(self.predictions)).scalar_one())

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        self.engine.dispose()
        self.write_engine.dispose()


def _sqlite_pragmas(synchronous: str, busy_ms: int) -> Any:
    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout=30000")  # the WAL switch itself may wait for another process
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
        cur.close()

    return on_connect


def _pieces(n: int, largest: int) -> list[int]:
    """``n`` as a sum of powers of two no larger than ``largest`` (rounded down to one), biggest first."""
    top = 1 << (max(1, largest).bit_length() - 1)
    out = [top] * (n // top)
    rest = n % top
    bit = top >> 1
    while rest:
        if rest >= bit:
            out.append(bit)
            rest -= bit
        bit >>= 1
    return out


def _redact(uri: str) -> str:
    return re.sub(r"//([^:/@]+):[^@]+@", r"//\1:***@", uri)


_STOP = object()

Waiter = tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | concurrent.futures.Future[None]


class StoreWriter:
    """The single writer: takes rows from a bounded queue and commits them in batches (group commit).

    The thread is built to share the GIL with a busy event loop: it sleeps once per batch to gather
    rows (never once per row), takes what is queued without blocking, and wakes each event loop once
    per commit for all of that loop's waiting requests. Every blocking call lets go of the GIL, and
    getting it back can take the interpreter's switch interval while the loop is busy, so the number
    of blocking calls per batch is what bounds the writer.
    """

    def __init__(
        self, store: PredictionStore, *, queue_size: int, batch_max: int, window_ms: float = 0.0, on_error: Any = None
    ) -> None:
        self.store = store
        self.queue_size = queue_size
        self.batch_max = batch_max
        self.window_s = window_ms / 1000.0
        self.on_error = on_error
        self._items: collections.deque[Any] = collections.deque()
        self._queued_rows = 0
        self._count_lock = threading.Lock()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="shipml-store-writer", daemon=True)
        self._thread.start()

    def has_room(self, n_rows: int) -> bool:
        """Whether ``n_rows`` more rows fit in the queue now (a unit bigger than the queue fits an empty one)."""
        return self._queued_rows == 0 or self._queued_rows + n_rows <= self.queue_size

    def _put(self, rows: list[PredictionRow], waiter: Any) -> None:
        with self._count_lock:
            if rows and self._queued_rows + len(rows) > self.queue_size and self._queued_rows > 0:
                raise StoreFull("prediction log queue is full")
            self._queued_rows += len(rows)
        self._items.append((rows, waiter))
        if not self._wake.is_set():
            self._wake.set()

    def submit(self, row: PredictionRow) -> concurrent.futures.Future[None]:
        """Queue ``row``; the future completes when it is committed. Raises StoreFull at once if full."""
        return self.submit_many([row])

    def submit_many(self, rows: Sequence[PredictionRow]) -> concurrent.futures.Future[None]:
        """Queue several rows as one unit (all committed in one batch)."""
        fut: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._put(list(rows), fut)
        return fut

    def submit_waitable(self, rows: Sequence[PredictionRow]) -> asyncio.Future[None]:
        """Like ``submit_many``, for a caller on an event loop: an asyncio future of this loop,
        resolved together with the rest of the commit's futures of the same loop (one wake-up)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._put(list(rows), (loop, fut))
        return fut

    def enqueue(self, rows: Sequence[PredictionRow]) -> None:
        """Queue rows nobody waits for (``async`` durability)."""
        self._put(list(rows), None)

    @property
    def pending(self) -> int:
        return self._queued_rows

    def _run(self) -> None:
        while True:
            self._wake.wait()
            if self.window_s > 0:
                time.sleep(self.window_s)  # group commit: one sleep gathers what arrives meanwhile
            self._wake.clear()
            batch: list[tuple[list[PredictionRow], Any]] = []
            n_rows = 0
            stop = False
            while self._items:
                head = self._items[0]
                if head is _STOP:
                    self._items.popleft()
                    stop = True
                    break
                if batch and n_rows + len(head[0]) > self.batch_max:
                    break
                batch.append(self._items.popleft())
                n_rows += len(head[0])
            if batch:
                with self._count_lock:
                    self._queued_rows -= n_rows
                self._commit(batch)
            if stop:
                return
            if self._items:
                self._wake.set()

    def _commit(self, batch: list[tuple[list[PredictionRow], Any]]) -> None:
        rows = [r for item, _ in batch for r in item]
        error: StoreError | None = None
        try:
            self.store.write(rows)
        except Exception as exc:
            if self.on_error is not None:
                self.on_error(exc)
            error = StoreError(f"prediction log write failed: {type(exc).__name__}")
        by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
        for _, waiter in batch:
            if waiter is None:
                continue
            if isinstance(waiter, concurrent.futures.Future):
                if error is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(error)
            else:
                by_loop.setdefault(waiter[0], []).append(waiter[1])
        for loop, futures in by_loop.items():
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting any more
                loop.call_soon_threadsafe(_resolve, futures, error)

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until everything queued before this call is committed."""
        marker = self.submit_many([])
        marker.result(timeout=timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Commit what is queued, then stop the thread."""
        self._items.append(_STOP)
        self._wake.set()
        self._thread.join(timeout=timeout)


def _resolve(futures: list[asyncio.Future[None]], error: StoreError | None) -> None:
    for fut in futures:
        if fut.done():  # the request was cancelled (client went away)
            continue
        if error is None:
            fut.set_result(None)
        else:
            fut.set_exception(error)
