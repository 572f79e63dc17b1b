"""``create_app(settings)``: the prediction service as an ASGI app. No state outside the app."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import anyio.to_thread
import orjson
import structlog
from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp

from shipml.adapters.mlflow_registry import MlflowRegistry, ModelRef
from shipml.adapters.prediction_store import PredictionStore, StoreWriter
from shipml.config import Settings, settings_for_worker
from shipml.errors import ConfigError, ShipmlError
from shipml.server.access import AccessLog, RequestRecorder
from shipml.server.auth import Authenticator
from shipml.server.errors import ApiError, error_response
from shipml.server.fast_lane import PredictLane
from shipml.server.metrics import ServerMetrics
from shipml.server.model_manager import ModelManager
from shipml.server.openapi import model_openapi
from shipml.server.predictions import PredictionService
from shipml.server.routes import mlflow_protocol, ops, predict, v2

log = structlog.get_logger("shipml.server")


@dataclass
class AppState:
    """Everything the routes reach through ``request.app.state.shipml``."""

    settings: Settings
    auth: Authenticator
    metrics: ServerMetrics
    manager: ModelManager
    service: PredictionService
    store: PredictionStore | None
    writer: StoreWriter | None


class LineBuffer:
    """structlog's output: JSON lines written to stdout in bursts (one system call per burst, not per
    request); warnings and errors, and anything older than ``interval`` seconds, go out at once."""

    def __init__(self, stream: BinaryIO, interval: float = 0.2) -> None:
        self.stream = stream
        self.interval = interval
        self._lines: list[bytes] = []
        self._last = time.monotonic()

    def msg(self, message: bytes) -> None:
        self._lines.append(message)
        now = time.monotonic()
        if now - self._last >= self.interval or len(self._lines) >= 256:
            self.flush(now)

    def urgent(self, message: bytes) -> None:
        self._lines.append(message)
        self.flush(time.monotonic())

    def flush(self, now: float | None = None) -> None:
        if self._lines:
            self._lines.append(b"")
            self.stream.write(b"\n".join(self._lines))
            self.stream.flush()
            self._lines = []
        self._last = now if now is not None else time.monotonic()

    debug = info = msg
    warning = warn = error = critical = exception = fatal = urgent


async def _flush_every(output: LineBuffer) -> None:
    """Quiet periods still see their log lines within one interval."""
    while True:
        await asyncio.sleep(output.interval)
        if time.monotonic() - output._last >= output.interval:
            output.flush()


def configure_logging(output: LineBuffer) -> None:
    """structlog as JSON lines on stdout."""
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=orjson.dumps),
        ],
        logger_factory=lambda *_: output,
        cache_logger_on_first_use=True,
    )
    logging.getLogger("uvicorn.access").disabled = True  # one line per request is ours


def create_app(settings: Settings) -> ASGIApp:
    """Build the service for ``settings``; the model is loaded at startup, not here."""
    if settings.auth.enabled and not settings.auth.keys:
        raise ConfigError(
            ["auth.keys: no API keys configured; add one (`shipml keys new`) or set auth.enabled: false explicitly"]
        )
    ref = ModelRef.parse(settings.serve_ref())
    metrics = ServerMetrics(settings.serve.multiproc_dir)
    home = Path(settings.home)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        output = LineBuffer(sys.stdout.buffer)
        configure_logging(output)
        recorder.sink = output
        flusher = asyncio.create_task(_flush_every(output), name="shipml-log-flush")
        if not settings.auth.enabled:
            log.warning(
                "auth_disabled",
                message="AUTHENTICATION IS DISABLED: anyone who can reach this port can predict and reload",
            )
        store = await anyio.to_thread.run_sync(
            lambda: PredictionStore(settings.store.uri, sqlite_synchronous=settings.store.sqlite_synchronous)
        )
        writer = StoreWriter(
            store, queue_size=settings.store.queue_size, batch_max=settings.store.batch_max,
            window_ms=settings.store.commit_window_ms if settings.store.durability == "commit"
            else settings.store.async_window_ms,  # nobody waits for an async commit: fewer, bigger ones
            on_error=lambda exc: _store_failed(metrics, exc),
        )  # fmt: skip
        registry = await anyio.to_thread.run_sync(MlflowRegistry, settings.registry)
        manager = ModelManager(ref, registry, settings.serve, home / "cache", metrics, store)
        app.state.shipml = AppState(
            settings, Authenticator(settings.auth), metrics, manager,
            PredictionService(writer, settings.store.durability, metrics), store, writer,
        )  # fmt: skip
        await manager.start()
        # Everything loaded so far (MLflow, sklearn, the model) lives as long as the process: keep it out
        # of the garbage collector's full passes, which otherwise stall requests for tens of milliseconds.
        gc.freeze()
        log.info("service_started", model=str(ref), version=manager.current.version if manager.current else None)
        try:
            yield
        finally:
            await manager.stop()
            await anyio.to_thread.run_sync(writer.close)
            store.close()
            log.info("service_stopped", pending=writer.pending)
            recorder.sink = None
            flusher.cancel()
            output.flush()

    app = FastAPI(title="shipml prediction service", version="1", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    for router in (predict.router, mlflow_protocol.router, v2.router, ops.router):
        app.include_router(router)
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(ShipmlError, _shipml_error)
    app.add_exception_handler(Exception, _internal_error)
    app.openapi = lambda: model_openapi(app)  # type: ignore[method-assign]
    if settings.serve.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.serve.cors_origins,
            allow_credentials=settings.serve.cors_allow_credentials,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type"],
        )
    recorder = RequestRecorder(metrics)
    app.add_middleware(AccessLog, recorder=recorder)
    if settings.serve.cors_origins:
        return app  # CORS preflights and headers are the framework's job: no fast lane then
    return PredictLane(app, recorder, settings.serve.log_features)


def _store_failed(metrics: ServerMetrics, exc: BaseException) -> None:
    metrics.store_errors.inc()
    log.error("store_write_failed", error=type(exc).__name__)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)  # noqa: S101
    return error_response(exc)


async def _shipml_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ShipmlError)  # noqa: S101
    return error_response(ApiError(400, "bad_request", exc.message))


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("internal_error", path=request.url.path, exc_info=exc)
    return error_response(ApiError(500, "internal", "internal error; see the service log"))


def app_from_environment() -> ASGIApp:
    """The uvicorn factory of worker processes (`shipml serve --workers N`)."""
    return create_app(settings_for_worker())
