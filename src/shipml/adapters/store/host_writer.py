"""The host writer: one process that commits the prediction log of every worker of ``shipml serve`` (SQLite).

Without it each worker commits its own rows, and the workers take turns on the file's lock: N commits and N WAL
syncs where one would do. With it, each worker's ``StoreWriter`` hands its encoded rows to this process over a Unix
socket (host_link.py) and waits for the answer; the writer takes every frame that has arrived, from every worker,
runs them in one transaction (in the writers' turn on the file, as any other writer of it), and answers each worker
once that commit returned: with ``store.sqlite_synchronous: FULL``, after the WAL was synced. A commit that fails
is tried again for each worker's frames alone, so one worker's bad rows do not fail another's.

``HostWriterProcess`` (in ``shipml serve``'s own process) starts the writer before the workers, starts it again when
it dies, and stops it after the workers have flushed their queues. Meanwhile a worker that cannot reach it commits
its rows itself (host_link.py): a writer killed mid-commit costs no row and no answer. The writer ignores SIGINT and
SIGTERM (the workers still flush through it when told to stop) and exits when its standard input, a pipe from
``shipml serve``, closes: when told to, or when ``shipml serve`` died.

The writer commits on one SQLite connection of its own, held for its life: the driver's, not SQLAlchemy's (a
commit through SQLAlchemy checked a connection out of its pool and back in, began, committed and reset it: about
as much CPU as the group's INSERTs). The statements are the ones the workers' store built; a parameter list of
rows runs as ``executemany``, as SQLAlchemy's ``exec_driver_sql`` runs it.

A commit waits up to ``store.host_writer_gather_ms`` for the frames of the workers whose frames the previous commit
held and that have not sent yet: under load each worker sends its next frame as soon as it has its answer, and
without the wait the first to send was committed alone, then the other (two commits and WAL syncs where one does).
Only the previous commit's workers are waited for: one that stops sending delays one commit by at most that long,
one idle before it none.

Run as ``python -c "<ENTRY>" SOCKET URI SYNCHRONOUS GATHER_S`` (its command line names this module).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import selectors
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import structlog

from shipml.adapters.store.engine import Database, reason
from shipml.adapters.store.host_link import HEADER, MAX_FRAME, decode
from shipml.adapters.store.predictions import LOCK_RETRY_S, LOCK_WAIT_S

log = structlog.get_logger("shipml.store")

RESTART_PAUSE_S = 0.2  # a writer that died is started again after this pause (doubling, up to RESTART_MAX_S)
RESTART_MAX_S = 5.0
# the imports with the cyclic collector paused, then what they made frozen out of its reach (see
# shipml.core.quiet_imports): the writer starts on 1.0 s of CPU instead of 1.5
ENTRY = (
    "import sys\n"
    "from shipml.core.quiet_imports import collector_paused, freeze_heap\n"
    "with collector_paused():\n"
    "    from shipml.adapters.store.host_writer import main\n"
    "freeze_heap()\n"
    "sys.exit(main(sys.argv[1:]))"
)
ANSWER_TIMEOUT_S = 5.0  # a worker that does not take its answer in this long is dropped (it reconnects)
_RECV_BYTES = 1 << 20
GATHER_S = 0.001  # store.host_writer_gather_ms's default, in seconds (see the module's docstring)


@dataclass(eq=False)
class _Peer:
    """One worker's connection: the bytes received and not yet a whole frame."""

    sock: socket.socket
    buffer: bytearray = field(default_factory=bytearray)


class HostWriter:
    """The writer's loop: accept workers, read their frames, commit what arrived together, answer each."""

    def __init__(
        self, database: Database, listener: socket.socket, parent: int | None = None, gather_s: float = GATHER_S
    ) -> None:
        """``parent``: a descriptor whose end (EOF) stops the loop (the pipe from ``shipml serve``); ``gather_s``:
        see the module's docstring."""
        self.database = database
        self.listener = listener
        self.selector = selectors.DefaultSelector()
        self.selector.register(listener, selectors.EVENT_READ, "accept")
        if parent is not None:
            self.selector.register(parent, selectors.EVENT_READ, "parent")
        self.parent = parent
        self.commits = 0
        self.gather_s = gather_s
        self._gone: set[_Peer] = set()  # workers dropped since the last commit
        self._pooled: Any = None  # the pool's proxy of the writer's connection (held: see the module's docstring)
        self._conn: sqlite3.Connection | None = None

    def run(self) -> None:
        try:
            self._serve()
        finally:
            self._close_connection()

    def _serve(self) -> None:
        done = False
        last: set[_Peer] = set()  # the workers whose frames the last commit held
        while not done:
            ready: list[tuple[_Peer, list[tuple[str, Any]]]] = []
            done = self._gather(ready, None)
            if ready and not done and self.gather_s > 0:
                # the workers of the last commit that have not sent yet are likely to, within a moment: their
                # frames join this commit (one commit, one WAL sync) unless gather_s passes first
                deadline = time.monotonic() + self.gather_s
                while not done and (last - {peer for peer, _ in ready}) - self._gone:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    done = self._gather(ready, left)
            self._gone.clear()
            if ready:
                last = {peer for peer, _ in ready}
                self._commit(ready)

    def _gather(self, ready: list[tuple[_Peer, list[tuple[str, Any]]]], timeout: float | None) -> bool:
        """Add the frames that arrive before ``timeout`` (None: wait for one) to ``ready``; whether to stop."""
        done = False
        for key, _ in self.selector.select(timeout):
            if key.data == "accept":
                for peer in self._accept():
                    ready += self._receive(peer)  # a new worker's first frame may be there already
            elif key.data == "parent":
                done = not os.read(key.fd, 4096)  # shipml serve is done, or gone
            else:
                ready += self._receive(key.data)
        return done

    def _accept(self) -> list[_Peer]:
        """Every worker waiting to connect."""
        peers: list[_Peer] = []
        while True:
            try:
                sock, _ = self.listener.accept()
            except BlockingIOError:
                return peers
            sock.setblocking(False)
            peer = _Peer(sock)
            self.selector.register(sock, selectors.EVENT_READ, peer)
            peers.append(peer)

    def _receive(self, peer: _Peer) -> list[tuple[_Peer, list[tuple[str, Any]]]]:
        """The whole frames ``peer`` sent so far (it is dropped when it closed or sent a broken frame)."""
        try:
            while True:
                chunk = peer.sock.recv(_RECV_BYTES)
                if not chunk:
                    self._drop(peer)
                    return []
                peer.buffer += chunk
                if len(chunk) < _RECV_BYTES:  # all there was: what comes later, the selector reports again
                    break
        except BlockingIOError:
            pass
        except OSError:
            self._drop(peer)
            return []
        frames = []
        buf = peer.buffer
        while len(buf) >= HEADER.size:
            (n,) = HEADER.unpack_from(buf)
            if n > MAX_FRAME or n == 0:
                self._drop(peer)
                return []
            if len(buf) < HEADER.size + n:
                break
            body = bytes(buf[HEADER.size : HEADER.size + n])
            del buf[: HEADER.size + n]
            try:
                frames.append((peer, decode(body)))
            except (ValueError, EOFError, TypeError, pickle.UnpicklingError):
                self._drop(peer)
                return []
        return frames

    def _drop(self, peer: _Peer) -> None:
        self._gone.add(peer)
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(peer.sock)
        peer.sock.close()

    def _commit(self, ready: list[tuple[_Peer, list[tuple[str, Any]]]]) -> None:
        """One transaction for every frame that arrived; if it fails, each frame alone, so that each worker gets
        its own frames' outcome. Answers after the commit returned."""
        error = self._execute([p for _, pieces in ready for p in pieces])
        if error is None or len(ready) == 1:
            answers = [error or ""] * len(ready)
        else:
            answers = [self._execute(pieces) or "" for _, pieces in ready]
        for (peer, _), answer in zip(ready, answers, strict=True):
            body = answer.encode()
            frame = HEADER.pack(len(body)) + body
            try:
                try:
                    sent = peer.sock.send(frame)  # an answer fits the socket's buffer: one system call
                except BlockingIOError:
                    sent = 0
                if sent < len(frame):  # the rest, waiting for the worker to read it
                    peer.sock.settimeout(ANSWER_TIMEOUT_S)
                    peer.sock.sendall(frame[sent:])
                    peer.sock.setblocking(False)
            except OSError:  # the worker is gone: its rows are committed all the same
                self._drop(peer)

    def _execute(self, pieces: list[tuple[str, Any]]) -> str | None:
        """Commit ``pieces``: None, or why not (one line)."""
        try:
            self._transaction(pieces)
        except sqlite3.Error as exc:
            self._close_connection()  # a failed commit (a full disk, an I/O error): a fresh connection next time
            return f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        except sa.exc.SQLAlchemyError as exc:  # opening the connection
            return f"{type(exc).__name__}: {reason(exc)}"
        except OSError as exc:  # the file's lock
            return f"{type(exc).__name__}: {exc.strerror or exc}"
        self.commits += 1
        return None

    def _transaction(self, pieces: list[tuple[str, Any]]) -> None:
        """Run ``pieces`` in one transaction on the writer's connection, in the writers' turn; SQLite's lock held
        by another process is retried every ``LOCK_RETRY_S`` for up to ``LOCK_WAIT_S`` (as ``execute_pieces``)."""
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            conn = self._connection()
            try:
                with self.database.turn():
                    try:
                        for sql, params in pieces:
                            if isinstance(params, list):  # rows of one statement (a columnar batch's)
                                conn.executemany(sql, params)
                            else:
                                conn.execute(sql, params)
                        conn.commit()
                    except BaseException:
                        with contextlib.suppress(sqlite3.Error):
                            conn.rollback()
                        raise
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(LOCK_RETRY_S)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            self._pooled = self.database.write_engine.raw_connection()  # the engine's pragmas applied
            self._conn = self._pooled.driver_connection
        assert self._conn is not None  # noqa: S101 - SQLite's driver connection
        return self._conn

    def _close_connection(self) -> None:
        pooled, self._pooled, self._conn = self._pooled, None, None
        if pooled is not None:
            with contextlib.suppress(sqlite3.Error, sa.exc.SQLAlchemyError):
                pooled.invalidate()  # closed, never handed out again


def listen(path: str) -> socket.socket:
    """A Unix socket listening at ``path`` (a file left there by a writer that died is replaced)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    os.chmod(path, 0o600)
    sock.listen(128)
    sock.setblocking(False)
    return sock


def main(argv: list[str]) -> int:
    """The writer process: ``SOCKET URI SYNCHRONOUS GATHER_S``; its standard input is the pipe from ``shipml serve``."""
    path, uri, synchronous, gather_s = argv
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)  # the workers flush through it while they stop
    database = Database(uri, sqlite_synchronous=synchronous)
    try:
        listener = listen(path + ".new")
        os.replace(path + ".new", path)  # the socket appears whole: a worker connects to a listening one
        HostWriter(database, listener, parent=sys.stdin.fileno(), gather_s=float(gather_s)).run()
    finally:
        database.close()
    return 0


class HostWriterProcess:
    """The host writer as ``shipml serve`` runs it: started before the workers, started again when it dies, stopped
    (``stop``) after them. Its socket is ``<directory>/writer.sock``."""

    def __init__(self, uri: str, synchronous: str, directory: Path, gather_s: float = GATHER_S) -> None:
        self.uri = uri
        self.synchronous = synchronous
        self.gather_s = gather_s
        self.socket_path = str(directory / "writer.sock")
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._started = 0.0
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    def start(self) -> None:
        """Start the writer, and watch it from a thread (started again if it dies)."""
        self._spawn()
        self._watcher = threading.Thread(target=self._watch, name="shipml-host-writer-watch", daemon=True)
        self._watcher.start()

    def _spawn(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        argv = [sys.executable, "-c", ENTRY, self.socket_path, self.uri, self.synchronous, repr(self.gather_s)]
        # not waited for: until its socket is there, the workers commit their own rows
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE)  # noqa: S603 - our own module
        self._started = time.monotonic()

    def _watch(self) -> None:
        pause = RESTART_PAUSE_S / 2
        while not self._stopping.is_set():
            proc = self.proc
            assert proc is not None  # noqa: S101 - started before the watcher
            code = proc.wait()
            if self._stopping.is_set():
                return
            # the workers commit their own rows until it is back
            log.warning("host_writer_exited", how=_how(code), restarts=self.restarts)
            if proc.stdin is not None:
                proc.stdin.close()
            # one that keeps dying is started again less and less often
            lived = time.monotonic() - self._started
            pause = RESTART_PAUSE_S if lived > RESTART_MAX_S else min(pause * 2, RESTART_MAX_S)
            if self._stopping.wait(pause):
                return
            self._spawn()
            self.restarts += 1

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def forget_in_child(self) -> None:
        """In a process forked from this one (a worker): close its copy of the writer's pipe, so that the writer
        still sees the end of its input when this process closes it (``stop``) or dies."""
        proc = self.proc
        if proc is not None and proc.stdin is not None:
            with contextlib.suppress(OSError, ValueError):
                proc.stdin.close()

    def stop(self, timeout: float = 30.0) -> None:
        """Close the writer's pipe (it exits after the commit in progress) and wait for it."""
        self._stopping.set()
        proc = self.proc
        if proc is None:
            return
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if self._watcher is not None:
            self._watcher.join(timeout=timeout)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        with contextlib.suppress(OSError):  # the directory made for it, if nothing else is there
            os.rmdir(os.path.dirname(self.socket_path))


def _how(code: int) -> str:
    return f"signal {-code}" if code < 0 else f"exit code {code}"
