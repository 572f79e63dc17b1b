"""What every route needs: the app state, the current deployment, record-level errors as 422."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.requests import Request

from shipml.server.errors import ApiError

if TYPE_CHECKING:
    from shipml.server.app import AppState
    from shipml.server.model_manager import Deployment
    from shipml.server.predictions import RecordResult


def state(request: Request) -> AppState:
    return request.app.state.shipml  # type: ignore[no-any-return]


def deployment(request: Request) -> Deployment:
    """The deployment this request runs on, taken once; 503 until a model is loaded."""
    current = state(request).manager.current
    if current is None:
        raise ApiError(503, "not_ready", "no model is loaded yet")
    request.scope.setdefault("state", {})["model_version"] = current.version
    return current


def raise_for_invalid(results: list[RecordResult]) -> None:
    """422 naming every record, feature and rule, when any record was refused."""
    details = [e.to_dict() for r in results for e in r.errors]
    if details:
        raise ApiError(
            422, "validation_error", f"{sum(1 for r in results if r.errors)} record(s) failed validation", details
        )
