"""The `shipml monitor ...` commands: drift and performance over a window, and the report people look at."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from shipml.cli.app import (
    ConfigOpt,
    RegistryOpt,
    SinceOpt,
    UntilOpt,
    WindowOpt,
    _registry,
    _settings,
    app,
    err,
    out,
)
from shipml.cli.tables import show
from shipml.errors import ConfigError

if TYPE_CHECKING:  # the job (numpy, scipy, sklearn, MLflow) is imported by the commands, not at start-up
    from shipml.config import Settings
    from shipml.core.experiment_history import ExperimentHistory
    from shipml.core.monitor_report import DriftReport, PerformanceEntry, SegmentReport
    from shipml.core.window import Window
    from shipml.pipelines.workspace import Workspace

monitor_app = typer.Typer(help="Drift and model performance from the prediction store.", no_args_is_help=True)
app.add_typer(monitor_app, name="monitor")

ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="model name (default: the served model's)")]

_STYLE = {"drift": "red", "warn": "yellow", "not_enough_data": "cyan", "no_drift": "green", "no_data": "cyan"}


def _model_name(settings: Settings, model: str | None) -> str:
    if model:
        return model
    if settings.serve.model:
        return settings.serve.model.split("@")[0].split("/")[0]
    if settings.model is not None:
        return settings.model.name
    found = sorted({str(ref.name) for ref in _registry(settings).models_with_alias("production")})
    if len(found) == 1:
        return found[0]
    which = f"models with a production alias: {', '.join(found)}" if found else "no model has a production alias"
    raise ConfigError([f"--model: required (the config names no model, serve.model is not set, and {which})"])


def _window(settings: Settings, window: str | None, since: str | None, until: str | None) -> Window:
    from shipml.core.window import parse_window

    return parse_window(window if window or since else settings.monitor.window, since, until)


@monitor_app.command("drift")
def monitor_drift(
    model: ModelOpt = None,
    window: WindowOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    recompute: Annotated[
        bool, typer.Option("--recompute", help="rebuild the window's settled histograms from the stored rows first")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON instead of tables")] = False,
    config: ConfigOpt = None,
    registry_uri: RegistryOpt = None,
) -> int:
    """Judge drift and performance over a window; store the report. Exit 0: no drift, 1: drift or a
    performance drop, 2: bad input."""
    from shipml.pipelines.monitor import run_monitoring
    from shipml.pipelines.workspace import Workspace

    settings = _settings(config, registry_uri)
    name = _model_name(settings, model)
    span = _window(settings, window, since, until)
    with Workspace.open(settings) as ws:  # the report is stored, and monitor.webhook_url told of a new verdict
        report, report_id = run_monitoring(ws, name, span, recompute=recompute)
    if as_json:
        out.print_json(report.to_json())
    else:
        _print(report, report_id)
    return 1 if report.alarm else 0


def _print(report: DriftReport, report_id: int | None) -> None:
    from datetime import UTC, datetime

    def iso(ts: float) -> str:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")

    out.print(f"[bold]{escape(report.model)}[/]: {iso(report.since)} to {iso(report.until)}")
    if not report.segments:
        out.print("[cyan]no predictions with histograms in this window[/] (verdict no_data)")
    for segment in report.segments:
        _print_segment(segment)
    style = _STYLE.get(report.verdict, "white")
    drop = ", [red]performance drop[/]" if report.performance_drop else ""
    out.print(f"verdict: [{style}]{report.verdict}[/]{drop}  (report {report_id} in the store)")


def _print_segment(s: SegmentReport) -> None:
    table = Table(title=f"version {escape(s.version)}, variant {escape(s.variant)}: {s.rows} rows")
    for column in ("feature", "statistic", "value", "warn/drift", "rows", "verdict"):
        table.add_column(column, justify="right" if column in ("value", "rows") else "left")
    for d in s.drift:
        if not d.decisive:
            continue
        style = _STYLE.get(d.verdict, "white")
        extra = f" (p={d.p_value:.3g})" if d.p_value is not None else ""
        table.add_row(
            escape(d.feature), d.statistic + extra, f"{d.value:.4f}", f"{d.threshold_warn:g}/{d.threshold_drift:g}",
            str(d.rows), f"[{style}]{d.verdict}[/]",
        )  # fmt: skip
    show(table, out, wrap=("statistic",))
    if s.performance:
        show(_performance_table(s.performance), out, wrap=("value [95% interval]", "judged"))
        for reason in dict.fromkeys(
            f"{p.estimate.kind} refused: {p.estimate.refused}" for p in s.performance if p.estimate.refused
        ):
            err.print(f"[yellow]note:[/] {escape(reason)}")
    labels = ", ".join(f"{k} {v}" for k, v in s.labels.items())
    if labels:
        out.print(f"labels: {labels}")
    for note in s.notes:
        err.print(f"[yellow]note:[/] {escape(note)}")


@monitor_app.command("report")
def monitor_report(
    output: Annotated[Path, typer.Option("--output", "-o", help="the HTML file to write")] = Path("report.html"),
    model: ModelOpt = None,
    window: WindowOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    config: ConfigOpt = None,
    registry_uri: RegistryOpt = None,
) -> None:
    """Run the job over the window and write its report as one self-contained HTML page; when the config runs an
    experiment (serve.variants with a challenger), the page also shows it over the same window."""
    from shipml.pipelines.monitor import MonitorJob
    from shipml.pipelines.workspace import Workspace
    from shipml.report import write_report

    if not output.parent.resolve().is_dir():  # before the job runs, not after
        raise ConfigError([f"--output: {output}: directory {output.parent} does not exist"])
    settings = _settings(config, registry_uri)
    name = _model_name(settings, model)
    span = _window(settings, window or ("7d" if not since else None), since, until)
    with Workspace.open(settings) as ws:
        report, report_id = MonitorJob.of(ws).run(name, span)
        experiment = _experiment(ws, name, span)
    write_report(report, output, report_id=report_id, experiment=experiment)
    shown = f", experiment {experiment.report.verdict}" if experiment is not None else ""
    out.print(f"wrote {output} (report {report_id}, verdict {report.verdict}{shown})")


def _experiment(ws: Workspace, model: str, window: Window) -> ExperimentHistory | None:
    """The config's experiment over the report's window, at cumulative cuts; None without one."""
    from shipml.pipelines.experiment_history import experiment_models, has_experiment, monitored_experiment

    if not has_experiment(ws.settings):
        return None
    if model not in experiment_models(ws.settings):
        served = ", ".join(experiment_models(ws.settings))
        err.print(f"[yellow]note:[/] no experiment section: the experiment's variants serve {escape(served)}, not "
                  f"{escape(model)}")  # fmt: skip
        return None
    return monitored_experiment(ws, model, window)


def _performance_table(entries: tuple[PerformanceEntry, ...]) -> Table:
    """Each realised or estimated metric with its interval, judged against the version's holdout value."""
    table = Table(title="performance")
    for column in ("metric", "kind", "value [95% interval]", "count", "holdout", "judged"):
        table.add_column(column, justify="right" if column == "count" else "left")
    for p in entries:
        e = p.estimate
        value = "-" if e.value is None else f"{e.value:.4f}"
        if e.value is not None and e.lower is not None and e.upper is not None:
            value += f" [{e.lower:.4f}, {e.upper:.4f}]"
        holdout = "-" if p.holdout is None else f"{p.holdout:.4f}"
        judged = "[red]drop[/]" if p.dropped else "refused" if e.refused else "ok" if e.enough_data else "too few rows"
        table.add_row(escape(e.metric), e.kind, escape(value), str(e.count), holdout, judged)
    return table
