"""Admission: a bound on the requests one worker works on at once, so that overload is a fast 503.

Without it, a service offered more than it can do queues every request: latency grows without bound,
every client times out, and memory grows with the queue. With it, the excess is refused at once with
``Retry-After`` while the admitted requests keep their usual latency, and service is normal as soon as
the load drops. Health probes and metrics are always admitted: an overloaded worker is alive.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import get_args

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from shipml.server.errors import ApiError, Protocol, error_body, error_headers, protocol_of

ALWAYS_ADMITTED = ("/health/", "/v2/health/", "/metrics")
_REFUSAL = ApiError(503, "overloaded", "the service is at capacity; retry later", headers={"Retry-After": "1"})


def _answer(protocol: Protocol) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The refusal's headers and body in ``protocol``'s error shape, built once: refusing must stay cheap."""
    body = orjson.dumps(error_body(_REFUSAL, protocol))
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    return headers + [(k.lower().encode(), v.encode()) for k, v in error_headers(_REFUSAL).items()], body


_ANSWERS = {protocol: _answer(protocol) for protocol in get_args(Protocol)}


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
            headers, body = _ANSWERS[protocol_of(scope["path"])]
            await send({"type": "http.response.start", "status": 503, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
