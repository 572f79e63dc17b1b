"""The service run in this process: ``create_app(settings, registry=..., store=...)`` with its lifespan started
(asgi-lifespan) on an event loop of its own thread, spoken to through ``httpx.ASGITransport``. The methods are
synchronous, so sync tests and module-scoped fixtures use it like a server; no port, no process start."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import httpx
from asgi_lifespan import LifespanManager

from shipml.adapters.registry import MlflowRegistry
from shipml.adapters.store import PredictionStore
from shipml.config import Settings
from shipml.server.app import create_app

T = TypeVar("T")
TIMEOUT_S = 120.0  # startup loads the model; a hung app fails the test instead of hanging it


class InProcessService:
    """An HTTP client of the in-process app: ``request``, ``get`` and ``post`` as httpx has them."""

    def __init__(self, loop: asyncio.AbstractEventLoop, client: httpx.AsyncClient) -> None:
        self._loop = loop
        self._client = client

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(TIMEOUT_S)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self._run(self._client.request(method, path, **kwargs))

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)


@contextmanager
def serve_in_process(
    settings: Settings, *, registry: MlflowRegistry | None = None, store: PredictionStore | None = None
) -> Iterator[InProcessService]:
    """The app started (model loaded, writer running) for the ``with`` block, stopped (drained, flushed) after."""
    app = create_app(settings, registry=registry, store=store)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="in-process-service", daemon=True)
    thread.start()
    started: concurrent.futures.Future[httpx.AsyncClient] = concurrent.futures.Future()
    stop = asyncio.Event()

    async def run() -> None:
        try:
            async with LifespanManager(app, startup_timeout=TIMEOUT_S, shutdown_timeout=TIMEOUT_S) as manager:
                transport = httpx.ASGITransport(app=manager.app, client=("127.0.0.1", 50000))
                async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as client:
                    started.set_result(client)
                    await stop.wait()
        except BaseException as exc:  # a failed startup reaches the test, not a log
            if not started.done():
                started.set_exception(exc)
            raise

    running = asyncio.run_coroutine_threadsafe(run(), loop)
    try:
        yield InProcessService(loop, started.result(TIMEOUT_S))
    finally:
        loop.call_soon_threadsafe(stop.set)
        try:
            running.result(TIMEOUT_S)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(TIMEOUT_S)
            loop.close()
