"""The service's one error shape: ``{"error": {"code", "message", "details"}}`` with a 4xx/5xx status."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response


class ApiError(Exception):
    """An answer that is not a success; ``details`` name records, features and rules."""

    def __init__(self, status: int, code: str, message: str, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            error["details"] = self.details
        return {"error": error}


def json_response(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status,
        media_type="application/json", headers=headers,
    )  # fmt: skip


def error_response(err: ApiError, extra: dict[str, Any] | None = None) -> Response:
    body = err.body()
    if extra:
        body.update(extra)
    headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
    return json_response(body, err.status, headers)
