"""Per-request bookkeeping: a request id, one JSON log line, the request metrics."""

from __future__ import annotations

import itertools
import os
import time
from typing import Any

import orjson
import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shipml.server.metrics import ServerMetrics

log = structlog.get_logger("shipml.server")


class RequestRecorder:
    """Request ids (process prefix + counter: unique, no syscall) and the log line + metrics of a request."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self.metrics = metrics
        # Once the service is up, request lines go straight to the log's line buffer: the same JSON
        # object structlog would write, at a sixth of the cost (measured: 12 us of a 63 us request).
        self.sink: Any = None
        self._prefix = f"{os.getpid():x}-{os.urandom(3).hex()}-"
        self._counter = itertools.count(1)
        self._clock = IsoClock()

    def new_id(self) -> str:
        return f"{self._prefix}{next(self._counter):x}"

    def record(
        self, request_id: str, endpoint: str, scope: Scope, status: int, started: float, extra: dict[str, Any]
    ) -> None:
        elapsed = time.perf_counter() - started
        m = self.metrics
        m.child(m.requests, endpoint, str(status)).inc()
        m.child(m.latency, endpoint).observe(elapsed)
        latency_ms = round(elapsed * 1000, 3)
        if self.sink is None:
            log.info(
                "request",
                id=request_id,
                method=scope["method"],
                path=scope["path"],
                status=status,
                latency_ms=latency_ms,
                **extra,
            )
            return
        line = {
            "id": request_id,
            "method": scope["method"],
            "path": scope["path"],
            "status": status,
            "latency_ms": latency_ms,
            **extra,
            "event": "request",
            "level": "info",
            "timestamp": self._clock.now(),
        }
        self.sink.msg(orjson.dumps(line))


class IsoClock:
    """The time as structlog's ISO UTC stamper writes it (``2026-01-02T03:04:05.123456Z``), the date
    part formatted once a second."""

    def __init__(self) -> None:
        self._whole = -1
        self._text = ""

    def now(self) -> str:
        now = time.time()
        whole = int(now)
        if whole != self._whole:
            self._whole, self._text = whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
        return f"{self._text}.{int((now - whole) * 1_000_000):06d}Z"


class AccessLog:
    """The recorder as ASGI middleware, for every request the framework serves."""

    def __init__(self, app: ASGIApp, recorder: RequestRecorder) -> None:
        self.app = app
        self.recorder = recorder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        request_id = self.recorder.new_id()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
                version = scope.get("state", {}).get("model_version")
                if version is not None:
                    message["headers"].append((b"x-model-version", str(version).encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            st = scope.get("state", {})
            endpoint = getattr(scope.get("route"), "path", "unmatched")
            extra = {"version": st.get("model_version"), "key": st.get("principal")}
            self.recorder.record(request_id, endpoint, scope, status, started, extra)
