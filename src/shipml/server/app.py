"""``create_app(settings)``: the prediction service as an ASGI app. No state outside the app.

The registry and the prediction store are built at startup from ``settings``, or handed in (tests serve an
in-process app over a registry and store they made, and close the store themselves)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio.to_thread
import structlog
from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp

from shipml.adapters.native import KernelLoader
from shipml.adapters.registry import MlflowRegistry, ModelRef, quiet_mlflow
from shipml.adapters.store import HostLink, PredictionStore, StoreWriter
from shipml.config import Settings, settings_for_worker
from shipml.core.prediction import Durability
from shipml.core.quiet_imports import freeze_heap
from shipml.errors import ConfigError, ShipmlError
from shipml.server.access import AccessLog, RequestRecorder
from shipml.server.admission import Admission
from shipml.server.auth import Authenticator
from shipml.server.canary import CanaryFollower
from shipml.server.errors import ApiError, error_response, to_api_error
from shipml.server.fast_lane import PredictLane
from shipml.server.hosts import HostGuard, allowed_hosts
from shipml.server.logs import LineBuffer, configure_logging, flush_every
from shipml.server.maintenance import StoreMaintenance
from shipml.server.metrics import ServerMetrics
from shipml.server.model_manager import ModelManager
from shipml.server.monitoring import ExperimentCollector, ReportCollector, ReportRefresher, ScheduledMonitor
from shipml.server.openapi import model_openapi
from shipml.server.predictions import PredictionService
from shipml.server.routes import mlflow_protocol, ops, predict, v2
from shipml.server.routing_watch import RoutingWatch
from shipml.server.state import AppState, stopping_signal

log = structlog.get_logger("shipml.server")


def create_app(
    settings: Settings, *, registry: MlflowRegistry | None = None, store: PredictionStore | None = None
) -> ASGIApp:
    """Build the service for ``settings``; the model is loaded at startup, not here. A ``registry`` or
    ``store`` given is used instead of the one ``settings`` names; a given store is left open at shutdown."""
    if settings.auth.enabled and not settings.auth.keys:
        raise ConfigError(
            ["auth.keys: no API keys configured; add one (`shipml keys new`) or set auth.enabled: false explicitly"]
        )
    ref = ModelRef.parse(settings.serve_ref())
    metrics = ServerMetrics(settings.serve.multiproc_dir)
    recorder = RequestRecorder(metrics)  # its sink is the log's line buffer while the service runs
    home = Path(settings.home)
    given_registry, given_store = registry, store

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        output = LineBuffer(sys.stdout.buffer)
        configure_logging(output)
        recorder.sink = output
        flusher = asyncio.create_task(flush_every(output), name="shipml-log-flush")
        if not settings.auth.enabled:
            log.warning(
                "auth_disabled",
                message="AUTHENTICATION IS DISABLED: anyone who can reach this port can predict and reload",
            )
        store = given_store
        if store is None:
            store = await anyio.to_thread.run_sync(PredictionStore.open, settings.store)
        store.predictions.on_default_rows = metrics.store_default_partition_rows.inc
        _link_host_writer(settings, store, metrics)
        committing = settings.store.durability is Durability.COMMIT
        writer = StoreWriter(
            store,
            queue_size=settings.store.queue_size,
            batch_max=settings.store.batch_max,
            # nobody waits for an async commit: fewer, bigger ones
            window_ms=settings.store.commit_window_ms if committing else settings.store.async_window_ms,
            on_error=lambda exc: _store_failed(metrics, exc),
            on_dropped=metrics.store_rows_dropped.inc,
            retry_s=0.0 if committing else settings.store.async_retry_s,
        )
        quiet_mlflow()
        registry = given_registry
        if registry is None:
            registry = await anyio.to_thread.run_sync(MlflowRegistry, settings.registry)
        kernels = KernelLoader(settings.native)  # the native tree kernel, built or loaded once per process
        manager = ModelManager(
            ref, registry, settings.serve, home / "cache", metrics, store, kernels,
            store_histograms=settings.store.histograms,
        )  # fmt: skip
        service = PredictionService(
            writer, settings.store.durability, metrics, settings.serve.request_timeout_s,
            settings.serve.shadow_timeout_s, store_timeout_s=settings.store.timeout_s,
        )  # fmt: skip
        app.state.shipml = AppState(
            settings,
            Authenticator(settings.auth),
            metrics,
            manager,
            service,
            store,
            writer,
            stopping_signal(settings.serve.drain_s),
        )
        await manager.start()
        shipml_state = app.state.shipml
        stored_gauges = (
            ReportCollector(store, ref.name, lambda: shipml_state.ready),
            ExperimentCollector(store, ref.name, lambda: manager.current),  # the deployment serving at scrape time
        )
        metrics.collectors = list(stored_gauges)
        refresher = ReportRefresher(*stored_gauges)  # reads the store off the event loop; a scrape never does
        refresher.start()
        monitor = ScheduledMonitor(settings, store, registry, ref.name)
        monitor.start()
        maintenance = StoreMaintenance(settings, store)
        maintenance.start()
        canary = CanaryFollower(store, ref.name, manager, settings.serve.reload_interval_s)
        metrics.collectors.append(canary)
        canary.start()
        routing = RoutingWatch(store, ref.name, settings.serve, str(ref))
        metrics.collectors.append(routing)
        routing.start()
        freeze_heap()  # MLflow, sklearn, the model: out of the full collections that would stall requests
        log.info(
            "service_started", model=str(ref), version=manager.current.primary.version if manager.current else None
        )
        try:
            yield
        finally:
            refresher.stop()
            await monitor.stop()
            await maintenance.stop()
            await canary.stop()
            await routing.stop()
            await manager.stop()
            await service.close()  # the shadows' queued copies: scored or dropped (counted), before the log closes
            await anyio.to_thread.run_sync(writer.close)
            if given_store is None:
                store.close()
            log.info("service_stopped", pending=writer.pending)
            recorder.sink = None
            flusher.cancel()
            output.flush()

    app = FastAPI(title="shipml prediction service", version="1", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    for router in (predict.router, mlflow_protocol.router, v2.router, ops.router):
        app.include_router(router)
    # One translation: every exception, the framework's own 404/405 included, through server/errors.py.
    # ApiError, ShipmlError and HTTPException are answered by the exception middleware; anything else
    # reaches Starlette's server-error middleware, which answers with the same handler and re-raises.
    for handled in (ApiError, ShipmlError, HTTPException, Exception):
        app.add_exception_handler(handled, _error)
    app.openapi = lambda: model_openapi(app)  # type: ignore[method-assign]
    if settings.serve.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.serve.cors_origins,
            allow_credentials=settings.serve.cors_allow_credentials,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type"],
        )
    app.add_middleware(AccessLog, recorder=recorder)
    hosts = allowed_hosts(settings.serve.host, settings.serve.allowed_hosts)
    # CORS preflights and headers are the framework's job: no fast lane then
    inner = app if settings.serve.cors_origins else PredictLane(app, recorder, settings.serve.log_features)
    return HostGuard(Admission(inner, settings.serve.max_in_flight, on_refused=metrics.overloaded.inc), hosts)


def _link_host_writer(settings: Settings, store: PredictionStore, metrics: ServerMetrics) -> None:
    """shipml serve --workers N on SQLite: this worker's rows are committed by the host's writer process with the
    other workers' (adapters/store/host_writer.py); those it commits itself are counted."""
    if settings.store.writer_socket and store.database.is_sqlite:
        store.predictions.host = HostLink(
            settings.store.writer_socket, settings.store.timeout_s, metrics.store_host_writer_fallbacks.inc
        )


def _store_failed(metrics: ServerMetrics, exc: BaseException) -> None:
    metrics.store_errors.inc()
    log.error("store_write_failed", error=type(exc).__name__)


async def _error(request: Request, exc: Exception) -> Response:
    if to_api_error(exc).status >= 500:
        log.error("request_failed", path=request.url.path, error=type(exc).__name__, exc_info=exc)
    return error_response(exc, request.url.path)


def app_from_environment() -> ASGIApp:
    """The uvicorn factory of worker processes (`shipml serve --workers N`)."""
    return create_app(settings_for_worker())
