"""``AppState``: everything the routes reach through ``request.app.state.shipml``."""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.requests import Request

from shipml.adapters.store import PredictionStore, StoreWriter
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
    stopping: Callable[[], bool] = field(default=lambda: False)

    @property
    def ready(self) -> bool:
        """A model is loaded and the process is not shutting down (load balancers stop sending at once)."""
        return self.manager.ready and not self.stopping()

    def deployment(self) -> Deployment:
        """The deployment serving now, taken once; 503 until a model is loaded."""
        current = self.manager.current
        if current is None:
            raise ApiError(503, "not_ready", "no model is loaded yet")
        return current


def state(request: Request) -> AppState:
    return request.app.state.shipml  # type: ignore[no-any-return]


def uvicorn_stopping() -> Callable[[], bool]:
    """Whether the uvicorn server running this app was told to stop (SIGTERM/SIGINT).

    uvicorn handles those signals with its server's bound ``handle_exit`` and marks ``should_exit``
    before it drains connections; called during startup, this finds that server through the handler.
    Outside uvicorn (tests, other servers) the answer is always False.
    """
    server = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
    if server is None or not hasattr(server, "should_exit"):
        return lambda: False
    return lambda: bool(server.should_exit)
