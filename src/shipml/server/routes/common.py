"""What every route needs: the app state, a request routed as a whole, record-level errors as 422."""

from __future__ import annotations

from starlette.requests import Request

from shipml.server.model_manager import Deployment, Variant
from shipml.server.protocols.shipml import raise_for_invalid, routing_key
from shipml.server.state import state

__all__ = ["raise_for_invalid", "routed", "state"]


def routed(request: Request, deployment: Deployment, variant: Variant | None = None) -> tuple[Variant, str | None]:
    """The variant that answers a request as a whole (MLflow's and the Open Inference Protocol's, whose answers
    name one model version), and the request's routing key (``X-Routing-Key``), which every record carries:
    ``variant`` when the path named it, else the one the key routes to (a random draw without one, in an
    experiment)."""
    key = routing_key(request.headers.get("x-routing-key"))
    if variant is None:
        variant, _ = state(request).service.route(deployment, key)
    request.scope.setdefault("state", {})["model_version"] = variant.version
    return variant, key
