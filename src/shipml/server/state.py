"""``AppState``: everything the routes reach through ``request.app.state.shipml``."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from shipml.adapters.prediction_store import PredictionStore, StoreWriter
from shipml.config import Settings
from shipml.server.auth import Authenticator
from shipml.server.errors import ApiError
from shipml.server.metrics import ServerMetrics
from shipml.server.model_manager import Deployment, ModelManager
from shipml.server.predictions import PredictionService


@dataclass
class AppState:
    """The objects built at startup by ``create_app``'s lifespan, one set per worker process."""

    settings: Settings
    auth: Authenticator
    metrics: ServerMetrics
    manager: ModelManager
    service: PredictionService
    store: PredictionStore | None
    writer: StoreWriter | None

    def deployment(self) -> Deployment:
        """The deployment serving now, taken once; 503 until a model is loaded."""
        current = self.manager.current
        if current is None:
            raise ApiError(503, "not_ready", "no model is loaded yet")
        return current


def state(request: Request) -> AppState:
    return request.app.state.shipml  # type: ignore[no-any-return]
