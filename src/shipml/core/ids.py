"""UUIDv7 prediction ids: time-ordered, unique under load (RFC 9562)."""

from __future__ import annotations

import os
import random
import threading
import time
import uuid


class Uuid7Generator:
    """Ids of one process: 48-bit Unix milliseconds, a 12-bit counter within the millisecond, 62 random bits.

    The counter keeps ids from one generator strictly increasing even within a millisecond; the random
    bits keep processes apart. The random generator is seeded once from the OS (ids need uniqueness, not
    secrecy, and a system call per id costs more than the rest of the id), and again in a forked child.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = 0
        self._counter = 0
        self._random: random.Random | None = None
        self._pid = 0

    def _rng(self) -> random.Random:
        if self._random is None or self._pid != os.getpid():
            self._random = random.Random(os.urandom(32))  # noqa: S311 - not used for secrets
            self._pid = os.getpid()
        return self._random

    def _next_value(self, rng: random.Random) -> int:
        """The next id as an integer; call with ``_lock`` held."""
        ms = time.time_ns() // 1_000_000
        if ms <= self._last_ms:
            self._counter += 1
            if self._counter > 0xFFF:  # counter exhausted: borrow the next millisecond
                self._last_ms += 1
                self._counter = 0
            ms = self._last_ms
        else:
            self._last_ms = ms
            self._counter = rng.getrandbits(10)  # random start, room to count
        return (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | self._counter << 64 | 0b10 << 62 | rng.getrandbits(62)

    def uuid7(self) -> uuid.UUID:
        with self._lock:
            return uuid.UUID(int=self._next_value(self._rng()))

    def strings(self, n: int) -> list[str]:
        """``n`` ids as canonical strings, taken under one lock (a batch's worth at once)."""
        with self._lock:
            rng = self._rng()
            values = [self._next_value(rng) for _ in range(n)]
        out = []
        for v in values:
            h = f"{v:032x}"
            out.append(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
        return out


def uuid7_seconds(text: str) -> float | None:
    """The Unix time an id made here was made at, or None if ``text`` is not a version 7 UUID."""
    try:
        value = uuid.UUID(text)
    except ValueError:
        return None
    if value.version != 7:
        return None
    return (value.int >> 80) / 1000.0
