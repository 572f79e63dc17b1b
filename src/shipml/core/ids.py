"""UUIDv7 prediction ids: time-ordered, unique under load (RFC 9562)."""

from __future__ import annotations

import os
import random
import threading
import time
import uuid

import numpy as np

NUMPY_FROM = 32  # ids.strings makes this many or more with numpy (measured: ~2 us an id one at a time, 10 us a call)


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
        """``n`` ids as canonical strings, taken under one lock (a batch's worth at once): the same ids one call
        per id would give (the counter runs on, borrowing the next millisecond past 4,095), made with numpy."""
        if n <= 0:
            return []
        if n < NUMPY_FROM:  # a few ids: one at a time is cheaper than numpy's call overhead
            with self._lock:
                rng = self._rng()
                values = [self._next_value(rng) for _ in range(n)]
            out = []
            for v in values:
                x = v.to_bytes(16, "big").hex()  # 0.5 us, where f"{v:032x}" takes 1.3 (measured)
                out.append(f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}")
            return out
        with self._lock:
            rng = self._rng()
            ms = time.time_ns() // 1_000_000
            if ms <= self._last_ms:
                start_ms, start = self._last_ms, self._counter + 1
            else:
                start_ms, start = ms, rng.getrandbits(10)
            total = start + np.arange(n, dtype=np.uint64)
            last = int(total[-1])
            self._last_ms, self._counter = start_ms + (last >> 12), last & 0xFFF
            random62 = np.frombuffer(rng.randbytes(8 * n), dtype=np.uint64) & np.uint64((1 << 62) - 1)
        words = np.empty((n, 2), dtype=">u8")
        words[:, 0] = ((start_ms + (total >> np.uint64(12))) & np.uint64((1 << 48) - 1)) << np.uint64(16)
        words[:, 0] |= np.uint64(0x7 << 12) | (total & np.uint64(0xFFF))
        words[:, 1] = np.uint64(0b10 << 62) | random62
        # the dashes put in by numpy and one text sliced: a fifth of the time of formatting each id (measured)
        digits = np.frombuffer(words.tobytes().hex().encode(), dtype=np.uint8).reshape(n, 32)
        text = np.full((n, 36), ord("-"), dtype=np.uint8)
        for lo, hi, at in ((0, 8, 0), (8, 12, 9), (12, 16, 14), (16, 20, 19), (20, 32, 24)):
            text[:, at : at + hi - lo] = digits[:, lo:hi]
        joined = text.tobytes().decode("ascii")
        return [joined[j : j + 36] for j in range(0, 36 * n, 36)]


def uuid7_seconds(text: str) -> float | None:
    """The Unix time an id made here was made at, or None if ``text`` is not a version 7 UUID."""
    try:
        value = uuid.UUID(text)
    except ValueError:
        return None
    if value.version != 7:
        return None
    return (value.int >> 80) / 1000.0
