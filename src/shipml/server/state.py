"""``AppState``: everything the routes reach through ``request.app.state.shipml``."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType

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
        """The deployment serving now (its variants, split and shadows), taken once; 503 until it is loaded."""
        current = self.manager.current
        if current is None:
            raise ApiError(503, "not_ready", "no model is loaded yet")
        return current


def state(request: Request) -> AppState:
    return request.app.state.shipml  # type: ignore[no-any-return]


def stopping_signal(drain_s: float) -> Callable[[], bool]:
    """Whether the uvicorn server running this app was told to stop (SIGTERM/SIGINT); call it at startup.

    uvicorn handles those signals with its server's bound ``handle_exit``, which closes the listening socket
    at once: a load balancer's next probe then finds nothing to ask. With ``drain_s`` > 0 the first signal
    only marks the service as stopping (``/health/ready`` answers 503, requests are still served) and hands
    the signal to uvicorn ``drain_s`` seconds later; a second signal stops at once. Outside uvicorn (tests,
    other servers) the answer is always False.
    """
    handler = signal.getsignal(signal.SIGTERM)
    server = getattr(handler, "__self__", None)
    if server is None or not hasattr(server, "should_exit") or not callable(handler):
        return lambda: False
    marked = threading.Event()
    if drain_s > 0 and threading.current_thread() is threading.main_thread():
        loop = asyncio.get_running_loop()
        uvicorn_exit = handler

        def on_signal(sig: int, frame: FrameType | None) -> None:
            if marked.is_set():
                uvicorn_exit(sig, frame)
                return
            marked.set()
            loop.call_soon_threadsafe(loop.call_later, drain_s, uvicorn_exit, sig, frame)

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, on_signal)
    return lambda: marked.is_set() or bool(server.should_exit)
