"""The prediction store: every prediction and its feedback, in SQLite (WAL) or Postgres.

Rows are written by one writer thread in batches (group commit). In ``commit``
durability the caller waits for the commit of its row; in ``async`` it does
not, and a full queue is reported at once so the service can shed load.
Features are stored both as JSON and as one typed column per feature
(``f_<name>``), so the monitoring job reads windows back fast and typed.
"""

from __future__ import annotations

import concurrent.futures
import queue
import re
import threading
import time
from collections.abc import Sequence
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
        try:
            if self.is_sqlite:
                path = uri.removeprefix("sqlite:///")
                if path and path != ":memory:":
                    Path(path).parent.mkdir(parents=True, exist_ok=True)
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
        self._insert_sql: str | None = None
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
        """Insert ``rows`` in one transaction (one prepared statement, many parameter tuples)."""
        if not rows:
            return
        typed = list(self._typed.items())
        if self._insert_sql is None or self._insert_width != len(typed):
            names = [c.name for c in self.predictions.c] + [col.name for _, col in typed]
            marker = "?" if self.is_sqlite else "%s"
            quoted = ", ".join(f'"{n}"' for n in names)
            self._insert_sql = f"INSERT INTO predictions ({quoted}) VALUES ({', '.join([marker] * len(names))})"  # noqa: S608 - names are ours
            self._insert_width = len(typed)
        payload = [
            (
                r.id,
                r.ts,
                r.model,
                r.version,
                r.variant,
                orjson.dumps(r.features).decode(),
                orjson.dumps(r.outputs).decode(),
                r.latency_ms,
                *(r.features.get(name) for name, _ in typed),
            )
            for r in rows
        ]
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                with self.write_engine.begin() as conn:
                    conn.exec_driver_sql(self._insert_sql, payload)
                return
            except sa.exc.OperationalError as exc:
                if not (self.is_sqlite and "locked" in str(exc.orig)) or time.monotonic() > deadline:
                    raise
                time.sleep(LOCK_RETRY_S)

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


def _redact(uri: str) -> str:
    return re.sub(r"//([^:/@]+):[^@]+@", r"//\1:***@", uri)


_STOP = object()


class StoreWriter:
    """The single writer: takes rows from a bounded queue and commits them in batches."""

    def __init__(
        self, store: PredictionStore, *, queue_size: int, batch_max: int, window_ms: float = 0.0, on_error: Any = None
    ) -> None:
        self.store = store
        self.batch_max = batch_max
        self.window_s = window_ms / 1000.0
        self.on_error = on_error
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._thread = threading.Thread(target=self._run, name="shipml-store-writer", daemon=True)
        self._thread.start()

    def submit(self, row: PredictionRow) -> concurrent.futures.Future[None]:
        """Queue ``row``; the future completes when it is committed. Raises StoreFull at once if full."""
        fut: concurrent.futures.Future[None] = concurrent.futures.Future()
        try:
            self._queue.put_nowait((row, fut))
        except queue.Full:
            raise StoreFull("prediction log queue is full") from None
        return fut

    def submit_many(self, rows: Sequence[PredictionRow]) -> concurrent.futures.Future[None]:
        """Queue several rows as one unit (all committed in one batch)."""
        fut: concurrent.futures.Future[None] = concurrent.futures.Future()
        try:
            self._queue.put_nowait((list(rows), fut))
        except queue.Full:
            raise StoreFull("prediction log queue is full") from None
        return fut

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch = [first]
            stop = False
            # Group commit: gather what arrives within the window, so one commit carries many rows.
            deadline = time.monotonic() + self.window_s
            while len(batch) < self.batch_max:
                try:
                    remaining = deadline - time.monotonic()
                    item = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                batch.append(item)
            self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list[tuple[Any, concurrent.futures.Future[None]]]) -> None:
        rows: list[PredictionRow] = []
        for item, _ in batch:
            rows.extend(item if isinstance(item, list) else [item])
        try:
            self.store.write(rows)
        except Exception as exc:
            if self.on_error is not None:
                self.on_error(exc)
            for _, fut in batch:
                fut.set_exception(StoreError(f"prediction log write failed: {type(exc).__name__}"))
            return
        for _, fut in batch:
            fut.set_result(None)

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until everything queued before this call is committed."""
        marker = self.submit_many([])
        marker.result(timeout=timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Commit what is queued, then stop the thread."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._queue.put(_STOP, timeout=0.1)
                break
            except queue.Full:
                if time.monotonic() > deadline:
                    break
        self._thread.join(timeout=max(0.0, deadline - time.monotonic()))
