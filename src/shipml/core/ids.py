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


def uuid7() -> uuid.UUID:
    """A version 7 UUID: 48-bit Unix milliseconds, a 12-bit counter within the millisecond, 62 random bits.

    The counter keeps ids from one process strictly increasing even within a
    millisecond; the random bits keep processes apart.
    """
    global _last_ms, _counter
    with _lock:
        rng = _rng()
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
        counter = _counter
        rand = rng.getrandbits(62)
    value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | rand
    return uuid.UUID(int=value)
