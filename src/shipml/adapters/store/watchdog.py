"""Cut a Postgres connection that stopped answering.

A database that hangs (a network path that drops packets, a proxy that stops forwarding) leaves the driver
waiting on a socket that the kernel still considers open: neither ``statement_timeout`` (the server never gets
the query, or its answer never arrives) nor TCP keepalives (the nearest hop answers them) end the wait. So each
call on a connection is watched: a call still waiting at its deadline has its socket shut down, the driver's
wait ends at once with a connection error (a ``StoreError`` for the caller), the pool drops the connection and
the next call opens a new one.

One thread per database, started at the first watched call; a watched call costs two dictionary operations.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator

POLL_S = 0.1  # how often the watchdog looks at the deadlines (a cut comes at most this late)


class Watchdog:
    """Deadlines of the calls in progress, per thread (nested calls: the earliest holds), and the thread that
    enforces them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watched: dict[int, list[tuple[float, int]]] = {}  # thread id -> its (deadline, socket) calls
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.cuts = 0

    @contextlib.contextmanager
    def watch(self, fd: int, seconds: float) -> Iterator[None]:
        """Shut the socket ``fd`` down if the block is still running ``seconds`` from now (0 or less: no limit)."""
        armed = self.arm(fd, seconds)
        try:
            yield
        finally:
            if armed:
                self.disarm()

    def arm(self, fd: int, seconds: float) -> bool:
        """Start watching a call of this thread on ``fd``; whether it is watched (then ``disarm`` it once)."""
        if seconds <= 0 or fd < 0:
            return False
        with self._lock:
            self._watched.setdefault(threading.get_ident(), []).append((time.monotonic() + seconds, fd))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="shipml-store-watchdog", daemon=True)
                self._thread.start()
        return True

    def disarm(self) -> None:
        """The thread's latest armed call is over (the socket is closed or reused only after this, so a cut never
        hits another connection)."""
        me = threading.get_ident()
        with self._lock:
            calls = self._watched.get(me)
            if calls:
                calls.pop()
            if not calls:
                self._watched.pop(me, None)

    def forget(self, fd: int) -> None:
        """Stop watching every call on ``fd`` (its connection goes back to the pool or is closed)."""
        with self._lock:
            for thread, calls in list(self._watched.items()):
                calls[:] = [c for c in calls if c[1] != fd]
                if not calls:
                    del self._watched[thread]

    def _run(self) -> None:
        while not self._stop.wait(POLL_S):
            now = time.monotonic()
            with self._lock:
                for calls in self._watched.values():
                    for i, (deadline, fd) in enumerate(calls):
                        if now >= deadline:
                            _shut_down(fd)
                            self.cuts += 1
                            calls[i] = (float("inf"), fd)  # cut once; disarmed by its caller as usual

    def close(self) -> None:
        self._stop.set()


def _shut_down(fd: int) -> None:
    """End both directions of the socket ``fd`` (the driver's own descriptor stays open: it sees end of file)."""
    with contextlib.suppress(OSError):
        dup = socket.socket(fileno=os.dup(fd))
        try:
            dup.shutdown(socket.SHUT_RDWR)
        finally:
            dup.close()
