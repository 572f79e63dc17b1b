"""UUIDv7 prediction ids: time-ordered, unique under load (RFC 9562)."""

from __future__ import annotations

import os
import random
import threading
import time
import uuid

_lock = threading.Lock()
_last_ms = 0
_counter = 0
_random: random.Random | None = None
_pid = 0


def _rng() -> random.Random:
    """A generator seeded once per process from the OS: ids need uniqueness, not secrecy, and a
    system call per id costs more than the rest of the id."""
    global _random, _pid
    if _random is None or _pid != os.getpid():  # re-seed in a forked child
        _random = random.Random(os.urandom(32))  # noqa: S311 - not used for secrets
        _pid = os.getpid()
    return _random


def _next_value(rng: random.Random) -> int:
    """The next id as an integer; call with ``_lock`` held."""
    global _last_ms, _counter
    ms = time.time_ns() // 1_000_000
    if ms <= _last_ms:
        _counter += 1
        if _counter > 0xFFF:  # counter exhausted: borrow the next millisecond
            _last_ms += 1
            _counter = 0
        ms = _last_ms
    else:
        _last_ms = ms
        _counter = rng.getrandbits(10)  # random start, room to count
    return (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | _counter << 64 | 0b10 << 62 | rng.getrandbits(62)


def uuid7() -> uuid.UUID:
    """A version 7 UUID: 48-bit Unix milliseconds, a 12-bit counter within the millisecond, 62 random bits.

    The counter keeps ids from one process strictly increasing even within a
    millisecond; the random bits keep processes apart.
    """
    with _lock:
        return uuid.UUID(int=_next_value(_rng()))


def uuid7_strings(n: int) -> list[str]:
    """``n`` ids as canonical strings, taken under one lock (a batch's worth at once)."""
    with _lock:
        rng = _rng()
        values = [_next_value(rng) for _ in range(n)]
    out = []
    for v in values:
        h = f"{v:032x}"
        out.append(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
    return out
