"""Every exception becomes an HTTP answer here, and only here.

One table maps an exception class to a status and a stable code (500 by
default, so a server fault is never blamed on the client and a client mistake
is named before it can reach the default). The shape of the body depends on
the protocol the request spoke: shipml's ``{"error": {"code", "message",
"details"}}``, the Open Inference Protocol's ``{"error": "<message>"}``, and
MLflow's scoring protocol, which adds ``error_code`` and ``message`` beside
shipml's object. The framework's handlers, the fast lane and the routes all go
through ``to_api_error`` and ``render``.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any, Literal

import orjson
from starlette.exceptions import HTTPException
from starlette.responses import Response

from shipml.errors import DataValidationError, ModelLoadError, RegistryError, StoreError, StoreFull

Protocol = Literal["shipml", "v2", "mlflow"]


class ApiError(Exception):
    """An answer that is not a success; ``details`` name records, features and rules."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            error["details"] = self.details
        return {"error": error}


# Exception class -> (status, code, message shown to the client). The most specific class wins (the
# table is searched along the exception's MRO). The client never sees a server-side exception's text:
# it may hold paths or URIs; the service log has it.
_TABLE: dict[type[BaseException], tuple[int, str, str | None]] = {
    StoreFull: (503, "overloaded", "the prediction log is full; retry later"),
    StoreError: (503, "store_unavailable", "the prediction store is unavailable; retry later"),
    ModelLoadError: (503, "model_unavailable", "the model could not be loaded; retry later"),
    RegistryError: (503, "registry_unavailable", "the model registry is unavailable; retry later"),
    DataValidationError: (422, "validation_error", None),  # the user's data: its message names the problem
    TimeoutError: (504, "timeout", "the model did not answer in time; retry later"),
}
_INTERNAL = (500, "internal", "internal error; see the service log")
_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
}


def to_api_error(exc: BaseException) -> ApiError:
    """The answer for ``exc``: itself for an ApiError, the table's row for a known class, else 500."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, HTTPException):  # the framework's own: unknown path, wrong method
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        if exc.status_code == 404:
            return ApiError(404, code, "no such endpoint; see /openapi.json")
        if exc.status_code == 405:
            return ApiError(
                405, code, "this endpoint does not take that method; see /openapi.json", headers=dict(exc.headers or {})
            )
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).phrase
        return ApiError(exc.status_code, code, detail, headers=dict(exc.headers or {}))
    for cls in type(exc).__mro__:
        row = _TABLE.get(cls)
        if row is not None:
            status, code, shown = row
            return ApiError(status, code, shown if shown is not None else str(exc))
    return ApiError(*_INTERNAL)


def protocol_of(path: str) -> Protocol:
    """The protocol a request path speaks, for the shape of its error body."""
    if path == "/v2" or path.startswith("/v2/"):
        return "v2"
    if path == "/invocations":
        return "mlflow"
    return "shipml"


def error_body(err: ApiError, protocol: Protocol = "shipml") -> dict[str, Any]:
    if protocol == "v2":
        return {"error": err.message}
    body = err.body()
    if protocol == "mlflow":  # MLflow's clients read `error_code` and `message`
        body["error_code"] = "BAD_REQUEST" if err.status < 500 else "SERVICE_UNAVAILABLE"
        body["message"] = err.message
    return body


def error_headers(err: ApiError) -> dict[str, str]:
    if err.status == 401:
        return {"WWW-Authenticate": "Bearer", **err.headers}
    return err.headers


def render(exc: BaseException, path: str) -> tuple[int, bytes, dict[str, str]]:
    """Status, JSON body and headers of the answer to ``exc`` on ``path`` (for raw ASGI senders)."""
    err = to_api_error(exc)
    return err.status, orjson.dumps(error_body(err, protocol_of(path))), error_headers(err)


def error_response(exc: BaseException, path: str = "") -> Response:
    status, payload, headers = render(exc, path)
    return Response(payload, status_code=status, media_type="application/json", headers=headers)


def json_response(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )
