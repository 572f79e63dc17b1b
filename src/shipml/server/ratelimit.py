"""Token buckets: per-key request limits and per-client limits on failed authentication."""

from __future__ import annotations

import math
import time
from collections import OrderedDict

from shipml.config import RateLimitSettings


class TokenBucket:
    """``burst`` tokens, refilled continuously at ``rate`` per second; a request takes one."""

    __slots__ = ("_at", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._at = time.monotonic()

    def take(self, now: float | None = None) -> float:
        """0 if a token was taken, else the seconds until one is there (nothing is taken then)."""
        now = time.monotonic() if now is None else now
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate


def retry_after(wait_s: float) -> str:
    """``Retry-After`` in whole seconds, never 0 (a client retrying at once would only be refused again)."""
    return str(max(1, math.ceil(wait_s)))


class BucketTable:
    """One bucket per client address, the least recently seen dropped past ``max_clients`` (bounded memory
    under a flood of addresses; a dropped client starts again with a full bucket)."""

    def __init__(self, limit: RateLimitSettings, max_clients: int = 10_000) -> None:
        self.limit = limit
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def take(self, client: str) -> float:
        bucket = self._buckets.get(client)
        if bucket is None:
            bucket = self._buckets[client] = TokenBucket(self.limit.requests_per_s, self.limit.burst)
            if len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(client)
        return bucket.take()
