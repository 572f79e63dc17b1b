"""Admission: a bound on the requests one worker works on at once, so that overload is a fast 503.

Without it, a service offered more than it can do queues every request: latency grows without bound,
every client times out, and memory grows with the queue. With it, the excess is refused at once with
``Retry-After`` while the admitted requests keep their usual latency, and service is normal as soon as
the load drops. Health probes and metrics are always admitted: an overloaded worker is alive.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

ALWAYS_ADMITTED = ("/health/", "/v2/health/", "/metrics")
_BODY = orjson.dumps({"error": {"code": "overloaded", "message": "the service is at capacity; retry later"}})
_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(_BODY)).encode()),
    (b"retry-after", b"1"),
]


class Admission:
    """An ASGI layer that refuses HTTP requests past ``limit`` in flight (in this process) with 503."""

    def __init__(self, app: ASGIApp, limit: int, on_refused: Callable[[], object] | None = None) -> None:
        self.app = app
        self.limit = limit
        self.in_flight = 0
        self.on_refused = on_refused

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(ALWAYS_ADMITTED):
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            if self.on_refused is not None:
                self.on_refused()
            await send({"type": "http.response.start", "status": 503, "headers": _HEADERS})
            await send({"type": "http.response.body", "body": _BODY})
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
