"""The serving commands: `shipml serve`, `shipml keys new`, `shipml ui`."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from shipml.cli.app import (
    ConfigOpt,
    RegistryOpt,
    _registry,
    _settings,
    app,
    err,
    keys_app,
    out,
)
from shipml.config import DEFAULT_CONFIG, Settings, load_settings
from shipml.errors import ConfigError, ShipmlError
from shipml.server.hosts import is_loopback


@app.command()
def ui(
    config: ConfigOpt = None,
    registry_uri: RegistryOpt = None,
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 5000,
) -> None:
    """Start MLflow's own UI on the registry (127.0.0.1 only unless --host says otherwise)."""
    settings = _settings(config, registry_uri)
    uri = settings.registry.uri
    if uri.startswith(("http://", "https://")):
        raise ShipmlError(f"the registry is a tracking server already: open {uri} in a browser")
    _registry(settings)  # creates the store and .shipml/ if this is the first command run
    # One person browsing a local store: one worker (MLflow's default is 4, each importing MLflow), and no job
    # runner (MLflow 3 starts one for its GenAI jobs, which shipml does not use): about half the time to the first
    # page. A user's own MLFLOW_SERVER_ENABLE_JOB_EXECUTION is kept.
    argv = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
    argv += ["--workers", "1"]
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}
    err.print(f"MLflow UI on http://{host}:{port} (Ctrl-C to stop)")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, env)  # noqa: S606 - become MLflow's UI, so signals reach it directly


# -- serving -----------------------------------------------------------------------------


@app.command()
def serve(
    config: ConfigOpt = None,
    registry_uri: RegistryOpt = None,
    model: Annotated[
        str | None, typer.Option(help="registry reference (default: serve.model or <model.name>@production)")
    ] = None,
    host: Annotated[str | None, typer.Option(help="interface (default: serve.host, 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="port (default: serve.port, 8000)")] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, max=64, help="worker processes (default: serve.workers)")
    ] = None,
) -> None:
    """Serve the registered version behind an alias over HTTP (shipml API, MLflow scoring, Open Inference v2)."""
    import tempfile

    import uvicorn

    from shipml.config import worker_environment
    from shipml.server.app import create_app
    from shipml.server.slow_clients import http_protocol
    from shipml.server.workers import fork_workers

    flags = {
        "serve.model": model,
        "serve.host": host,
        "serve.port": port,
        "serve.workers": workers,
        "registry.uri": registry_uri,
    }
    overrides = {k: str(v) for k, v in flags.items() if v is not None}
    nested: dict[str, Any] = {}
    for key, value in overrides.items():
        section, field = key.split(".")
        nested.setdefault(section, {})[field] = value
    settings = load_settings(config, overrides=nested or None)
    chosen = ""
    if settings.serve.model is None and settings.model is None and not settings.serve.variants:
        # no shipml.yaml (e.g. right after `make quickstart`): serve the one model in production, if one
        overrides["serve.model"] = _only_production_model(settings)
        nested.setdefault("serve", {})["model"] = overrides["serve.model"]
        settings = load_settings(config, overrides=nested)
        unset = f"no {DEFAULT_CONFIG}" if config is None and not Path(DEFAULT_CONFIG).is_file() else "no serve.model"
        chosen = f"{unset}: serving {overrides['serve.model']}, the only model with a production alias"
    no_config = config is None and not Path(DEFAULT_CONFIG).is_file()
    if no_config and settings.auth.enabled and not settings.auth.keys and is_loopback(settings.serve.host):
        # the first run after `make quickstart`: serve on this machine only, and say that nobody is asked for a key
        overrides["auth.enabled"] = "false"
        nested.setdefault("auth", {})["enabled"] = False
        settings = load_settings(config, overrides=nested)
        err.print(
            f"no {DEFAULT_CONFIG} and no API keys: authentication is off, and only this machine can connect "
            f"({settings.serve.host}); `shipml keys new` and auth.keys in {DEFAULT_CONFIG} turn it on",
            highlight=False,
            markup=False,
        )
    app_or_factory: Any = create_app(settings)  # refuses a bad config before any port is bound
    _store_opens(settings)
    if chosen:
        err.print(chosen, highlight=False, markup=False)
    n = settings.serve.workers
    metrics_dir = None
    writer = None
    if n > 1:
        metrics_dir = tempfile.mkdtemp(prefix="shipml-metrics-")
        overrides["serve.multiproc_dir"] = metrics_dir
        writer = _host_writer(settings)
        if writer is not None:
            overrides["store.writer_socket"] = writer.socket_path
        os.environ.update(worker_environment(config, overrides))
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        app_or_factory = "shipml.server.app:app_from_environment"
        fork_workers(settings.registry.uri, writer)  # forked from here, with what they import already imported
    err.print(
        f"serving {settings.serve_ref()} on http://{settings.serve.host}:{settings.serve.port} with {n} worker(s)"
    )
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then re-raises the signal to the handler it
    # found: make that one a no-op, so a graceful stop exits 0 instead of dying by the signal.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    try:
        uvicorn.run(
            app_or_factory,
            factory=n > 1,
            host=settings.serve.host,
            port=settings.serve.port,
            workers=n,
            http=http_protocol(settings.serve.read_timeout_s),  # a partial: pickled into each worker with its value
            access_log=False,
            server_header=False,
            timeout_keep_alive=settings.serve.keep_alive_s,  # type: ignore[arg-type]  # uvicorn's hint says int
            # X-Forwarded-For only from serve.trusted_proxies (uvicorn's own default trusts 127.0.0.1)
            proxy_headers=bool(settings.serve.trusted_proxies),
            forwarded_allow_ips=list(settings.serve.trusted_proxies) or None,
            timeout_graceful_shutdown=int(settings.serve.grace_period_s) or None,
            log_level="warning",
        )
    finally:
        if writer is not None:
            writer.stop()  # after the workers: they flushed their queues through it
    if metrics_dir is not None:
        import shutil

        shutil.rmtree(metrics_dir, ignore_errors=True)


def _host_writer(settings: Settings) -> Any:
    """The host writer of a SQLite store served by several workers (``store.host_writer``), started; else None."""
    if not settings.store.host_writer or not settings.store.uri.startswith("sqlite"):
        return None
    import tempfile

    from shipml.adapters.store import HostWriterProcess

    writer = HostWriterProcess(
        settings.store.uri,
        settings.store.sqlite_synchronous,
        Path(tempfile.mkdtemp(prefix="shipml-writer-")),
        gather_s=settings.store.host_writer_gather_ms / 1000.0,
    )
    writer.start()
    return writer


def _store_opens(settings: Settings) -> None:
    """Open the prediction store once (its migrations applied) before any worker starts: a store that cannot be
    opened (a file without permission, a database that refuses) is one error line and exit 1 here, not a traceback
    from every worker's startup."""
    from shipml.adapters.store import PredictionStore

    PredictionStore.open(settings.store).close()


def _only_production_model(settings: Settings) -> str:
    """``NAME@production`` of the only registered model with a production alias; else a one-line error."""
    registry = _registry(settings)
    try:
        found = [str(ref) for ref in registry.models_with_alias("production")]
    finally:
        registry.close()  # before the workers are forked from this process
    if len(found) == 1:
        return found[0]
    choose = "choose one with --model NAME@ALIAS (or serve.model in shipml.yaml)"
    if not found:
        raise ConfigError([f"serve.model: not set, and no registered model has a production alias; {choose}"])
    raise ConfigError(
        [f"serve.model: not set, and {len(found)} models have a production alias ({', '.join(found)}); {choose}"]
    )


@keys_app.command("new")
def keys_new(
    name: Annotated[str, typer.Option(help="who will hold the key (shown in logs)")],
    role: Annotated[list[str] | None, typer.Option(help="predict and/or admin (repeatable)")] = None,
) -> None:
    """Make an API key: the key for the client, its sha256 for shipml.yaml."""
    from shipml.server.auth import new_key

    roles = role or ["predict"]
    bad = [r for r in roles if r not in ("predict", "admin")]
    if bad:
        raise ConfigError([f"--role: must be predict or admin, got {bad[0]!r}"])
    key, digest = new_key()
    err.print("the key (give it to the client; it is not stored anywhere):")
    out.print(key, markup=False, highlight=False)
    err.print("add this under auth.keys in shipml.yaml:")
    err.print(f"  - {{name: {name}, sha256: {digest}, roles: [{', '.join(roles)}]}}", markup=False, highlight=False)
