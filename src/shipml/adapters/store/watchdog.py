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
    """Deadlines of the calls in progress, one per thread, and the thread that enforces them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watched: dict[int, tuple[float, int]] = {}  # thread id -> (deadline, socket descriptor)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.cuts = 0

    @contextlib.contextmanager
    def watch(self, fd: int, seconds: float) -> Iterator[None]:
        """Shut the socket ``fd`` down if the block is still running ``seconds`` from now (0 or less: no limit)."""
        if seconds <= 0 or fd < 0:
            yield
            return
        me = threading.get_ident()
        with self._lock:
            previous = self._watched.get(me)
            deadline = time.monotonic() + seconds
            if previous is not None:  # a nested call (a ping inside a checkout): the earlier deadline holds
                deadline = min(deadline, previous[0])
            self._watched[me] = (deadline, fd)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="shipml-store-watchdog", daemon=True)
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:  # the descriptor is closed or reused only after this: a cut never hits another socket
                if previous is None:
                    self._watched.pop(me, None)
                else:
                    self._watched[me] = previous

    def _run(self) -> None:
        while not self._stop.wait(POLL_S):
            now = time.monotonic()
            with self._lock:
                for thread, (deadline, fd) in list(self._watched.items()):
                    if now >= deadline:
                        del self._watched[thread]
                        _shut_down(fd)
                        self.cuts += 1

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
