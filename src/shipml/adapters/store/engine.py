"""The store's database: opened once (migrations applied), shared by every part of the store.

``Database`` holds the SQLAlchemy engines (on SQLite a second one for the row writer, which does not sleep in
SQLite's busy handler), the pragmas, the writers' turn on the SQLite file (``turn``) and ``errors``, the one
translation of a database error into ``StoreError`` that the parts' methods go through.

On Postgres each process keeps a bounded pool (``store.pool_size`` + ``store.pool_max_overflow``; a caller waits
at most ``store.timeout_s`` for a connection of it) and every call on a connection is watched (watchdog.py): one
that stopped answering is cut instead of holding its thread. A pooled connection is pinged, watched too, before it
is handed out, so one that died while idle (a restarted server) is replaced.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection, Engine

from shipml.adapters.store.migrations import migrate
from shipml.adapters.store.watchdog import Watchdog
from shipml.config import redact_uri
from shipml.errors import StoreError


class Database:
    """One database behind the store's parts: its engines, its dialect and the SQLite file's writer lock."""

    def __init__(
        self,
        uri: str,
        *,
        sqlite_synchronous: str = "FULL",
        connect_timeout_s: float = 5.0,
        statement_timeout_s: float = 60.0,
        timeout_s: float = 5.0,
        pool_size: int = 4,
        pool_max_overflow: int = 2,
    ) -> None:
        """``connect_timeout_s`` and ``statement_timeout_s`` bound Postgres (a hung database fails a call instead of
        holding its thread; 0: no statement timeout); SQLite waits at most 30 s for another process's lock.
        ``timeout_s`` (Postgres): the longest a write or a ping waits, and a caller waits for a pooled connection;
        a read may take ``statement_timeout_s`` more. ``pool_size`` + ``pool_max_overflow``: this process's
        connections at most."""
        self.uri = uri
        self.timeout_s = timeout_s
        # a read's statement may run statement_timeout_s; its connection is cut only if it is silent longer
        self.read_timeout_s = statement_timeout_s + timeout_s if statement_timeout_s > 0 else 0.0
        self.watchdog = Watchdog()
        self.lock_path: Path | None = None  # SQLite file: writers of all processes take turns on it
        self._lock_fd: int | None = None
        self._turn_lock = threading.Lock()  # the threads of this process take turns on the one descriptor
        try:
            url = sa.engine.make_url(uri)
        except sa.exc.ArgumentError as exc:
            raise StoreError(f"store.uri: cannot open {redact_uri(uri)}: {exc}") from None
        self.is_sqlite = url.get_backend_name() == "sqlite"
        engines: list[Engine] = []
        try:
            if self.is_sqlite:
                database = url.database or ""
                if database in ("", ":memory:") or "mode=memory" in uri:
                    raise StoreError(
                        f"store.uri: cannot open {redact_uri(uri)}: an in-memory SQLite database is private to one "
                        "connection, and the store's writer opens its own; use a file, e.g. "
                        "sqlite:///.shipml/predictions.db"
                    )
                Path(database).parent.mkdir(parents=True, exist_ok=True)
                self.lock_path = Path(database + ".writelock")
                self.engine: Engine = sa.create_engine(uri, connect_args={"check_same_thread": False, "timeout": 30})
                engines.append(self.engine)
                sa.event.listen(self.engine, "connect", _sqlite_pragmas(sqlite_synchronous, busy_ms=30_000))
                # The writer does not sleep in SQLite's busy handler (1 ms, then up to 100 ms back-off) when
                # another worker process holds the write lock: it retries every half millisecond itself.
                self.write_engine: Engine = sa.create_engine(
                    uri, connect_args={"check_same_thread": False, "timeout": 0}
                )
                engines.append(self.write_engine)
                sa.event.listen(self.write_engine, "connect", _sqlite_pragmas(sqlite_synchronous, busy_ms=0))
            else:
                self.engine = sa.create_engine(
                    uri,
                    pool_size=pool_size,
                    max_overflow=pool_max_overflow,
                    pool_timeout=timeout_s,
                    connect_args=_pg_timeouts(url, connect_timeout_s, statement_timeout_s),
                )
                engines.append(self.engine)
                sa.event.listen(self.engine, "connect", _mark_fresh)
                sa.event.listen(self.engine, "checkout", self._ping)
                sa.event.listen(self.engine, "checkin", self._checkin)
                # every statement is watched (a read: statement_timeout_s + timeout_s); a streamed read's fetches
                # are not, so a long stream is never cut for its length
                sa.event.listen(self.engine, "before_cursor_execute", self._statement_starts)
                sa.event.listen(self.engine, "after_cursor_execute", self._statement_ends)
                sa.event.listen(self.engine, "handle_error", self._statement_failed)
                self.write_engine = self.engine
            migrate(self.engine, self.lock_path)
        except (ImportError, sa.exc.ArgumentError) as exc:
            _dispose(engines)
            hint = " (install the extra: pip install 'shipml[postgres]')" if "psycopg" in str(exc) else ""
            raise StoreError(f"store.uri: cannot open {redact_uri(uri)}: {exc}{hint}") from None
        except sa.exc.SQLAlchemyError as exc:
            _dispose(engines)
            why = reason(exc).replace(url.password, "***") if url.password else reason(exc)
            raise StoreError(f"store.uri: cannot open {redact_uri(uri)}: {why}") from None
        except OSError as exc:
            _dispose(engines)
            raise StoreError(f"store.uri: cannot open {redact_uri(uri)}: {exc.strerror or exc}") from None

    def insert(self, table: sa.Table) -> Any:
        """The dialect's INSERT of ``table`` (with ``on_conflict_do_nothing`` / ``on_conflict_do_update``)."""
        return (pg_dialect.insert if not self.is_sqlite else sqlite_dialect.insert)(table)

    def now(self) -> Any:
        """The database's clock as Unix seconds, an SQL expression: Postgres's ``clock_timestamp()`` (one clock for
        every process and host that shares the store), SQLite's own ``julianday('now')`` (the host of the file: a
        process's patched or skewed ``time.time`` does not change it)."""
        if self.is_sqlite:
            return (sa.func.julianday("now") - 2440587.5) * 86400.0
        return sa.cast(sa.extract("epoch", sa.func.clock_timestamp()), sa.Float)

    @contextlib.contextmanager
    def errors(self, what: str) -> Iterator[None]:
        """Turn a database error inside the block (or a failure of the SQLite file's lock) into
        ``StoreError("store: <what>: <the driver's reason>")``: the one translation every part's methods use."""
        try:
            yield
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"store: {what}: {reason(exc)}") from None
        except OSError as exc:
            raise StoreError(f"store: {what}: {exc.strerror or exc}") from None

    @contextlib.contextmanager
    def reading(self, what: str) -> Iterator[Connection]:
        """A connection for reads, its database errors translated (``errors``)."""
        with self.errors(what), self.engine.connect() as conn:
            yield conn

    @contextlib.contextmanager
    def writing(self, what: str) -> Iterator[Connection]:
        """One transaction in the writers' turn (``turn``), committed at the end, its database errors translated."""
        with self.errors(what), self.turn(), self.transaction(self.engine) as conn:
            yield conn

    @contextlib.contextmanager
    def transaction(self, engine: Engine) -> Iterator[Connection]:
        """One transaction on ``engine``, committed at the end; on Postgres its connection is cut if the
        transaction, its commit included, is still waiting after ``timeout_s``. Errors are the driver's."""
        with engine.connect() as conn, self.watched(conn, self.timeout_s), conn.begin():
            yield conn

    @contextlib.contextmanager
    def watched(self, conn: Connection, seconds: float) -> Iterator[None]:
        """Cut ``conn`` (Postgres) if the block still runs after ``seconds`` (see watchdog.py)."""
        if self.is_sqlite:
            yield
            return
        with self.watchdog.watch(_socket_of(conn.connection.dbapi_connection, self._dbapi_error), seconds):
            yield

    @property
    def _dbapi_error(self) -> type[Exception]:
        error: type[Exception] = self.engine.dialect.loaded_dbapi.Error
        return error

    def _statement_starts(self, conn: Connection, *_args: Any) -> None:
        conn.info[_ARMED] = self.watchdog.arm(
            _socket_of(conn.connection.dbapi_connection, self._dbapi_error), self.read_timeout_s
        )

    def _statement_ends(self, conn: Connection, *_args: Any) -> None:
        if conn.info.pop(_ARMED, False):
            self.watchdog.disarm()

    def _statement_failed(self, context: Any) -> None:
        conn = context.connection
        if conn is not None:
            self._statement_ends(conn)

    def _checkin(self, dbapi_conn: Any, _record: Any) -> None:
        self.watchdog.forget(_socket_of(dbapi_conn, self._dbapi_error))

    def _ping(self, dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        """Before a pooled connection is handed out: one round trip, watched, unless it was just opened. A dead
        one (a restarted server, a cut) is replaced by a new connection (the pool's DisconnectionError)."""
        if record.info.pop(_FRESH, False):
            return
        dialect = self.engine.dialect
        try:
            with self.watchdog.watch(_socket_of(dbapi_conn, self._dbapi_error), self.timeout_s):
                dialect.do_ping(dbapi_conn)
        except self._dbapi_error as exc:
            raise sa.exc.DisconnectionError(f"the pooled connection is dead: {exc}") from None

    @contextlib.contextmanager
    def turn(self) -> Iterator[None]:
        """Hold the file's writer lock (flock) for one transaction. The store writers of several worker
        processes then queue for SQLite's write lock, each handed it when the last commit ends, instead
        of polling for it; whatever arrives meanwhile goes into the next commit.

        A flock belongs to the file description, not to a thread: the threads of one process (the row writer,
        the monitor's job, a request's) share the descriptor, so they first take turns on a threading lock held
        for the whole turn; otherwise one thread's unlock would end another's turn."""
        if self.lock_path is None:
            yield
            return
        with self._turn_lock:
            if self._lock_fd is None:
                self._lock_fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def close(self) -> None:
        with self._turn_lock:  # not under a thread's turn
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None
        self.engine.dispose()
        self.write_engine.dispose()
        self.watchdog.close()


_ARMED = "shipml_watched"  # a connection's mark: its statement in progress is watched
_FRESH = "shipml_fresh"  # a connection record's mark: opened, not yet handed out (no ping needed)


def _mark_fresh(_dbapi_conn: Any, record: Any) -> None:
    record.info[_FRESH] = True


def _socket_of(dbapi_conn: Any, dbapi_error: type[Exception]) -> int:
    """The socket descriptor of a psycopg connection (-1 when it has none: lost, closed, or invalidated: None)."""
    if dbapi_conn is None:
        return -1
    try:
        return int(dbapi_conn.fileno())
    except dbapi_error:
        return -1


def reason(exc: sa.exc.SQLAlchemyError) -> str:
    """The driver's own message, on one line (SQLAlchemy's adds the statement and a link)."""
    orig = getattr(exc, "orig", None)
    return " ".join(str(orig if orig is not None else exc).split())


def _pg_timeouts(url: sa.engine.URL, connect_timeout_s: float, statement_timeout_s: float) -> dict[str, Any]:
    """libpq's connect_timeout (whole seconds, at least 2) and the session's statement_timeout; a value the URI
    gives itself (``?connect_timeout=3``, ``?options=...``) is left as given."""
    out: dict[str, Any] = {}
    if "connect_timeout" not in url.query:
        out["connect_timeout"] = max(2, math.ceil(connect_timeout_s))
    if "options" not in url.query:
        out["options"] = f"-c statement_timeout={round(statement_timeout_s * 1000)}"
    return out


def _sqlite_pragmas(synchronous: str, busy_ms: int) -> Any:
    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout=30000")  # the WAL switch itself may wait for another process
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
        cur.close()

    return on_connect


def _dispose(engines: list[Engine]) -> None:
    for engine in engines:
        engine.dispose()
