"""The `shipml deploy ...` commands: a canary of a candidate version, its status, and stopping it."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from shipml.cli.app import ConfigOpt, RegistryOpt, _settings, app, err, out

if TYPE_CHECKING:
    from shipml.core.canary import Canary
    from shipml.pipelines.canary import CanaryController
    from shipml.pipelines.workspace import Workspace

deploy_app = typer.Typer(
    help="Canary deployments: a candidate version's traffic raised step by step while its guardrails hold.",
    no_args_is_help=True,
)
app.add_typer(deploy_app, name="deploy")

EXIT_CODES = {"promoted": 0, "rolled_back": 1, "aborted": 1, "running": 3, "held": 3, "promoting": 3}  # 2: bad input
_STYLE = {
    "promoted": "green", "promoting": "green", "rolled_back": "red", "aborted": "red", "running": "cyan",
    "held": "yellow",
}  # fmt: skip


def _controller(
    config: Path | None, registry_uri: str | None, check_every_s: float = 1.0
) -> tuple[CanaryController, Workspace]:
    """The controller over the config's workspace (its store opened as the service opens it); close the workspace."""
    from shipml.pipelines.canary import CanaryController
    from shipml.pipelines.workspace import Workspace

    ws = Workspace.open(_settings(config, registry_uri))
    return CanaryController(ws.settings, ws.store, ws.registry, check_every_s=check_every_s), ws


def _line(canary: Canary) -> str:
    style = _STYLE[canary.status]
    where = f"step {canary.step + 1}/{len(canary.steps)}, {canary.percent:g} %" if canary.serving else "0 %"
    return (
        f"{escape(canary.model)}/{canary.candidate} vs {escape(canary.champion)}: [{style}]{canary.status}[/] "
        f"({where}): {escape(canary.reason)}"
    )


@deploy_app.command("canary")
def deploy_canary(
    model: Annotated[str, typer.Argument(help="registered model name (the one the service serves)")],
    version: Annotated[str, typer.Argument(help="the candidate version")],
    steps: Annotated[str, typer.Option(help="percentages of traffic, increasing, ending at 100")] = "1,5,10,25,50,100",
    interval: Annotated[str, typer.Option(help="how long each step lasts at least: 90s, 10m, 1h")] = "10m",
    min_requests: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="requests the candidate must answer in a step before it goes on (default: per step, what the "
            "latency guardrail needs to decide at its share: 2,330 at 1 %, 3,540 at 10 %, 8,300 at 50 %)",
        ),
    ] = None,
    check_every: Annotated[
        str | None, typer.Option(help="how often the guardrails are checked (default: a tenth of the interval)")
    ] = None,
    require: Annotated[
        str,
        typer.Option(
            help="guardrails that must be shown to hold before a step goes on, comma-separated (error_rate, "
            "latency_p99, drift, performance; the others roll back only once violated); 'none': none"
        ),
    ] = "error_rate",
    salt: Annotated[
        str | None,
        typer.Option(help="the canary's routing salt (default: derived from MODEL and VERSION, its own customers)"),
    ] = None,
    detach: Annotated[bool, typer.Option("--detach", help="start it and return; run again to follow it")] = False,
    config: ConfigOpt = None,
    registry_uri: RegistryOpt = None,
) -> int:
    """Start a canary of MODEL version VERSION (or follow the active one of that version) and drive it to its end.
    Exit 0: promoted, 1: rolled back or aborted, 2: bad input, 3: still running (--detach).

    Every replica of the service serves the candidate as the variant `canary` with the step's share of the
    champion's traffic. At each check the candidate's guardrails are compared with the champion's over the current
    step only (anytime-valid intervals, from the prediction store): one crossing its boundary, or a sample ratio
    mismatch in the step, rolls the canary back at once (weight 0, aliases untouched). A step goes on after
    --interval if the candidate answered --min-requests in it, else it holds. The 100 % step is not judged (the
    champion serves nobody there): once the step before it holds, the candidate is promoted through the registry
    (the version it replaces becomes `previous`). The state lives in the
    store: stopping this command leaves the canary where it is; run it again to resume (at once: a stopped command
    gives up driving it). While another `deploy canary` drives it, this one follows and says so."""
    from shipml.core.canary import parse_required, parse_steps
    from shipml.core.window import duration_s

    planned = parse_steps(steps)
    required = parse_required(require)
    interval_s = duration_s(interval, "--interval")
    every = duration_s(check_every, "--check-every") if check_every else max(0.5, min(interval_s / 10.0, 60.0))
    controller, ws = _controller(config, registry_uri, every)
    try:
        with _stopped_by_sigterm():
            canary, started = controller.start(model, version, planned, interval_s, min_requests, required, salt)
            out.print(("started " if started else "following ") + _line(canary))
            if detach:
                return EXIT_CODES[canary.status]
            return _drive(controller, model, canary, every)
    finally:
        controller.close()  # another `deploy canary` drives at once
        ws.close()


def _drive(controller: CanaryController, model: str, canary: Canary, every: float) -> int:
    """Tick until the canary ends, printing its state after each event and who drives it when that changes."""
    driver = controller.holder
    while True:
        tick = controller.tick(model)
        now = tick.canary
        if tick.driver is not None and tick.driver != driver and now is not None and not now.ended:
            who = "this command" if tick.driving else f"another `deploy canary` ({escape(tick.driver)}); following it"
            out.print(f"{_clock()} driven by {who}")
            driver = tick.driver
        if tick.event is not None and now is not None:
            out.print(f"{_clock()} {_line(now)}")
        if now is None or now.ended:
            final = now or canary
            if tick.event is None:
                out.print(f"{_clock()} {_line(final)}")
            return EXIT_CODES[final.status]
        time.sleep(every)


@contextmanager
def _stopped_by_sigterm() -> Iterator[None]:
    """SIGTERM (a `kill`, a stopping container) ends the command like Ctrl-C: its lease is released on the way out."""

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@deploy_app.command("status")
def deploy_status(
    model: Annotated[str | None, typer.Argument(help="model name (default: every canary)")] = None,
    events: Annotated[bool, typer.Option("--events", help="also print the canary's log of events")] = False,
    config: ConfigOpt = None,
    registry_uri: RegistryOpt = None,
) -> int:
    """The canary of MODEL (or of every model): its state, and with --events its log. Exit 0: found, 1: none."""
    from shipml.pipelines.workspace import Workspace

    with Workspace.open(_settings(config, registry_uri)) as ws:
        store = ws.store
        if model is None:
            found = store.canaries.all()
        else:
            one = store.canaries.read(model)
            found = [one] if one is not None else []
        if not found:
            err.print(f"no canary{' of ' + escape(model) if model else ''}")
            return 1
        for canary in found:
            out.print(_line(canary))
            if events:
                for e in store.canaries.events(canary.model, since=canary.started_at):
                    out.print(f"  {_clock(e.ts)} {e.event}: {e.percent:g} % {escape(e.reason)}")
        return 0


@deploy_app.command("abort")
def deploy_abort(
    model: Annotated[str, typer.Argument(help="model name")],
    reason: Annotated[str, typer.Option(help="why, kept in the canary's log")] = "aborted by hand",
    config: ConfigOpt = None,
    registry_uri: RegistryOpt = None,
) -> None:
    """Stop the active canary of MODEL: its weight goes to 0 on every replica; the registry's aliases are untouched."""
    controller, ws = _controller(config, registry_uri)
    try:
        out.print(_line(controller.abort(model, reason)))
    finally:
        ws.close()


def _clock(ts: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if ts is None else ts, UTC).strftime("%H:%M:%SZ")
