"""HostLink: a worker's side of the host writer (host_writer.py), the one process that commits every worker's rows.

A worker's ``StoreWriter`` gathers its rows and the store encodes them (``Predictions.write``: the INSERTs and their
parameters); the link sends them over the writer's Unix socket and waits for its answer, sent after the commit that
holds them returned (the WAL synced, with ``store.sqlite_synchronous: FULL``). The writer commits what all workers
sent meanwhile in one transaction: one commit, one fsync per host, instead of one per worker taking turns on the
file's lock.

A frame is a 4-byte length and a body: ``m`` + ``marshal`` of the pieces (a list of ``(sql, parameters)``), or ``p`` +
``pickle`` when a parameter is not one of marshal's types. The socket is in a directory only its user can open, and
the writer runs what it is sent: it trusts its peers as their user does. The answer is an empty frame (committed) or
the reason the commit failed (UTF-8).
"""

from __future__ import annotations

import marshal
import pickle
import socket
import struct
import time
from collections.abc import Callable, Sequence
from typing import Any

from shipml.errors import StoreError

HEADER = struct.Struct("!I")
RETRY_AFTER_S = (
    1.0  # after the writer failed to answer, this process commits its own rows this long before asking again
)
MAX_FRAME = 1 << 30  # a frame longer than this is a broken peer, not a commit


class HostWriteFailed(StoreError):
    """The host writer could not commit the rows it was sent (a full disk, a constraint): they are not stored."""


def encode(pieces: Sequence[tuple[str, Any]]) -> bytes:
    """``pieces`` as one frame."""
    try:
        body = b"m" + marshal.dumps(list(pieces))
    except ValueError:  # a parameter marshal cannot write (an enum, a numpy scalar): pickle takes anything
        body = b"p" + pickle.dumps(list(pieces), protocol=5)
    return HEADER.pack(len(body)) + body


def decode(body: bytes) -> list[tuple[str, Any]]:
    """The pieces of a frame's body (``encode``'s)."""
    # a peer of the same user (see the module's docstring)
    pieces: list[tuple[str, Any]] = marshal.loads(body[1:]) if body[:1] == b"m" else pickle.loads(body[1:])  # noqa: S301, S302
    return pieces


def read_exactly(sock: socket.socket, n: int) -> bytes:
    """``n`` bytes from ``sock``; ConnectionError when it closes first."""
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(min(n - got, 1 << 20))
        if not chunk:
            raise ConnectionError("the host writer closed the connection")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


class HostLink:
    """A worker's connection to the host writer at ``path``, opened when first needed and again after a failure.

    ``write`` is called by one thread at a time (the worker's ``StoreWriter``)."""

    def __init__(self, path: str, timeout_s: float = 5.0, on_unreachable: Callable[[], None] | None = None) -> None:
        """``on_unreachable()``: called for each write this process commits itself (the service counts them)."""
        self.path = path
        self.timeout_s = timeout_s
        self.on_unreachable = on_unreachable
        self._sock: socket.socket | None = None
        self._down_until = 0.0  # the writer failed to answer: not asked again before then (a stuck one costs once)
        self.unreachable = 0  # writes this process committed itself: the writer was down, or lost mid-commit

    def write(self, pieces: Sequence[tuple[str, Any]]) -> bool:
        """Have the host writer commit ``pieces``: True once committed; False if it cannot be reached or its answer
        did not come (killed, restarting, stuck for ``timeout_s``): the caller commits them itself, and since the
        inserts skip rows already stored, a commit the writer did make before it died is not written twice.
        HostWriteFailed if the writer answered that its commit failed. After a failure to answer, the writer is
        not asked again for ``RETRY_AFTER_S``: one that is stuck delays one commit, not each."""
        if self._down_until and time.monotonic() < self._down_until:
            return self._unreachable()
        frame = encode(pieces)
        try:
            sock = self._connected()
            sock.sendall(frame)
            (n,) = HEADER.unpack(read_exactly(sock, HEADER.size))
            answer = read_exactly(sock, n) if n else b""
        except OSError:  # refused, reset, closed, timed out: ConnectionError and TimeoutError are OSErrors
            self.close()
            self._down_until = time.monotonic() + RETRY_AFTER_S
            return self._unreachable()
        self._down_until = 0.0
        if answer:
            raise HostWriteFailed(f"store: prediction log write failed in the host writer: {answer.decode()}")
        return True

    def _unreachable(self) -> bool:
        self.unreachable += 1
        if self.on_unreachable is not None:
            self.on_unreachable()
        return False

    def _connected(self) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout_s)
            try:
                sock.connect(self.path)
                # then blocking, with the kernel's timeouts: a socket with Python's timeout polls before every
                # send and receive (two more system calls a commit); a timed-out call raises an OSError all the same
                sock.settimeout(None)
                micros = max(1, round(self.timeout_s * 1e6))  # 0 would be no limit
                limit = struct.pack("ll", micros // 1_000_000, micros % 1_000_000)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, limit)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, limit)
            except OSError:
                sock.close()
                raise
            self._sock = sock
        return self._sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
