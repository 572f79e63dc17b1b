"""What every route needs: the app state, the current deployment, record-level errors as 422."""

from __future__ import annotations

from starlette.requests import Request

from shipml.server.model_manager import Variant
from shipml.server.protocols.shipml import raise_for_invalid
from shipml.server.state import state

__all__ = ["deployment", "raise_for_invalid", "state"]


def deployment(request: Request) -> Variant:
    """The variant this whole request runs on (routed by its ``X-Routing-Key``, else at random, in an
    experiment; the only one otherwise), taken once; 503 until a model is loaded."""
    current = state(request).variant(request.headers.get("x-routing-key"))
    request.scope.setdefault("state", {})["model_version"] = current.version
    return current
