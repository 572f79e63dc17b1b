"""PredictLane: ``POST /predict`` served in front of the framework.

Measured under wrk on the example model, FastAPI's middleware stack, routing
and request/response objects cost about as much as the whole prediction, so
the one-row hot path is answered here from the raw ASGI messages. It runs the
same function as the FastAPI route (auth, validation, model, prediction log),
gives the same answers and errors, and writes the same log line and metrics.
Every other request goes to the framework unchanged.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import orjson
import structlog
from starlette.types import Receive, Scope, Send

from shipml.server.access import RequestRecorder
from shipml.server.auth import key_from_headers
from shipml.server.errors import render
from shipml.server.http import check_json_type, parse_json, receive_body
from shipml.server.protocols.shipml import predict_one, routing_key

if TYPE_CHECKING:
    from fastapi import FastAPI

log = structlog.get_logger("shipml.server")
_JSON = (b"content-type", b"application/json")


class PredictLane:
    """The outermost ASGI app: takes ``POST /predict``, passes everything else to ``app``."""

    def __init__(self, app: FastAPI, recorder: RequestRecorder, log_features: bool) -> None:
        self.app = app
        self.recorder = recorder
        self.log_features = log_features

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/predict" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        state = getattr(self.app.state, "shipml", None)
        if state is None:  # not started yet: let the framework answer
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = self.recorder.new_id()
        headers = [_JSON, (b"x-request-id", request_id.encode())]
        extra: dict[str, Any] = {"version": None, "key": None}
        try:
            auth_header, api_key, content_length, content_type, encoding, routing = _headers(scope)
            check_json_type(content_type)
            body = await receive_body(receive, encoding, content_length, state.settings.serve.max_body_bytes)
            parsed = parse_json(body)
            client = scope.get("client")
            key = key_from_headers(auth_header, api_key)
            answer, served, principal = await predict_one(
                state, key, client[0] if client else None, parsed, routing_key(routing)
            )
            extra = {"version": served.version, "key": principal}
            if self.log_features:
                extra["features"] = parsed.get("features")
            headers.append((b"x-model-version", served.version.encode()))
            status, payload = 200, orjson.dumps(answer)
        except Exception as exc:  # every exception becomes its answer in server/errors.py
            status, payload, more = render(exc, "/predict")
            if status >= 500:
                log.error("request_failed", path="/predict", error=type(exc).__name__, exc_info=exc)
            headers.extend((k.lower().encode(), v.encode()) for k, v in more.items())
        headers.append((b"content-length", str(len(payload)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
        self.recorder.record(request_id, "/predict", scope, status, started, extra)


def _headers(scope: Scope) -> tuple[str | None, ...]:
    """Authorization, X-API-Key, Content-Length, Content-Type, Content-Encoding and X-Routing-Key of the request
    (None when absent), in one pass over the headers."""
    found: dict[bytes, str] = {}
    for name, value in scope["headers"]:
        if name in _WANTED:
            found[name] = value.decode("latin-1")
    return tuple(found.get(name) for name in _WANTED)


_WANTED = (b"authorization", b"x-api-key", b"content-length", b"content-type", b"content-encoding", b"x-routing-key")
