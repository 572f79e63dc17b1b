"""The prediction store: every prediction and its feedback, in SQLite (WAL) or Postgres.

Rows are written by one writer thread in batches (group commit). In ``commit``
durability the caller waits for the commit of its row; in ``async`` it does
not, and a full queue is reported at once so the service can shed load.
Features are stored both as JSON and as one typed column per feature
(``f_<name>``), so the monitoring job reads windows back fast and typed.
"""

from __future__ import annotations

import concurrent.futures
import json
import queue
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from shipml.core.schema import FeatureSchema
from shipml.errors import ShipmlError

_SAFE = re.compile(r"[^a-z0-9_]")


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
                sa.event.listen(self.engine, "connect", _sqlite_pragmas(sqlite_synchronous))
            else:
                self.engine = sa.create_engine(uri, pool_pre_ping=True)
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
        """Insert ``rows`` in one transaction."""
        if not rows:
            return
        payload = []
        for r in rows:
            item: dict[str, Any] = {
                "id": r.id, "ts": r.ts, "model": r.model, "version": r.version, "variant": r.variant,
                "features": json.dumps(r.features), "outputs": json.dumps(r.outputs), "latency_ms": r.latency_ms,
            }  # fmt: skip
            for name, col in self._typed.items():
                item[col.name] = r.features.get(name)
            payload.append(item)
        columns = [*self.predictions.c, *list(self._typed.values())]
        stmt = sa.insert(sa.table("predictions", *(sa.column(c.name) for c in columns)))
        with self.engine.begin() as conn:
            conn.execute(stmt, payload)

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


def _sqlite_pragmas(synchronous: str) -> Any:
    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    return on_connect


def _redact(uri: str) -> str:
    return re.sub(r"//([^:/@]+):[^@]+@", r"//\1:***@", uri)


_STOP = object()


class StoreWriter:
    """The single writer: takes rows from a bounded queue and commits them in batches."""

    def __init__(self, store: PredictionStore, *, queue_size: int, batch_max: int, on_error: Any = None) -> None:
        self.store = store
        self.batch_max = batch_max
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
            while len(batch) < self.batch_max:
                try:
                    item = self._queue.get_nowait()
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
