"""``create_app(settings)``: the prediction service as an ASGI app. No state outside the app."""

from __future__ import annotations

import logging
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread
import structlog
from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shipml.adapters.mlflow_registry import MlflowRegistry, ModelRef
from shipml.adapters.prediction_store import PredictionStore, StoreWriter
from shipml.config import Settings, settings_for_worker
from shipml.errors import ConfigError, ShipmlError
from shipml.server.auth import Authenticator
from shipml.server.errors import ApiError, error_response
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


def configure_logging() -> None:
    """structlog as JSON lines on stdout."""
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    logging.getLogger("uvicorn.access").disabled = True  # one line per request is ours


def create_app(settings: Settings) -> FastAPI:
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
        configure_logging()
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
            on_error=lambda exc: _store_failed(metrics, exc),
        )  # fmt: skip
        registry = await anyio.to_thread.run_sync(MlflowRegistry, settings.registry)
        manager = ModelManager(ref, registry, settings.serve, home / "cache", metrics, store)
        app.state.shipml = AppState(
            settings, Authenticator(settings.auth), metrics, manager,
            PredictionService(writer, settings.store.durability, metrics), store, writer,
        )  # fmt: skip
        await manager.start()
        log.info("service_started", model=str(ref), version=manager.current.version if manager.current else None)
        try:
            yield
        finally:
            await manager.stop()
            await anyio.to_thread.run_sync(writer.close)
            store.close()
            log.info("service_stopped", pending=writer.pending)

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
    app.add_middleware(AccessLog, metrics=metrics, log_features=settings.serve.log_features)
    return app


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


class AccessLog:
    """One JSON log line and the request metrics per HTTP request (pure ASGI, no body buffering)."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics, log_features: bool) -> None:
        self.app = app
        self.metrics = metrics
        self.log_features = log_features

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        request_id = str(uuid.uuid4())

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
                version = scope.get("state", {}).get("model_version")
                if version is not None:
                    message["headers"].append((b"x-model-version", str(version).encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            endpoint = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(elapsed)
            st = scope.get("state", {})
            log.info(
                "request", id=request_id, method=scope["method"], path=scope["path"], status=status,
                latency_ms=round(elapsed * 1000, 3), version=st.get("model_version"), key=st.get("principal"),
            )  # fmt: skip


def app_from_environment() -> FastAPI:
    """The uvicorn factory of worker processes (`shipml serve --workers N`)."""
    return create_app(settings_for_worker())
