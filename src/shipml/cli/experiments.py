"""The `shipml ab ...` commands: an experiment's report and verdict, and promoting its winner."""

from __future__ import annotations

import math
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
    _settings,
    app,
    err,
    out,
)
from shipml.cli.tables import show

if TYPE_CHECKING:  # the job (numpy, scipy, MLflow) is imported by the commands, not at start-up
    from shipml.config import Settings
    from shipml.core.experiment_report import ExperimentReport
    from shipml.pipelines.experiments import ExperimentJob

ab_app = typer.Typer(
    help="A/B experiments: the variants of serve.variants (and serve.shadow) judged from the prediction store.",
    no_args_is_help=True,
)
app.add_typer(ab_app, name="ab")

ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="model name (default: the champion's)")]

EXIT_CODES = {"ship": 0, "rollback": 1, "continue": 3, "unhealthy": 4, "no_data": 5}  # 2: bad input
_STYLE = {"ship": "green", "rollback": "red", "continue": "yellow", "unhealthy": "red", "no_data": "cyan"}


def _model_name(settings: Settings, model: str | None) -> str:
    from shipml.adapters.registry import ModelRef

    return model or ModelRef.parse(settings.serve_ref()).name


def _run(
    settings: Settings,
    model: str | None,
    window: str | None,
    since: str | None,
    until: str | None,
    *,
    save: bool = False,
) -> tuple[ExperimentJob, ExperimentReport]:
    """Parse the window, then build the report (the job is returned for ``promote``); with ``save``, keep it
    in the store, where the service's experiment gauges read it."""
    from shipml.core.window import parse_window
    from shipml.pipelines.experiments import ExperimentJob
    from shipml.pipelines.workspace import Workspace

    span = parse_window(window if window or since else settings.monitor.window, since, until)
    name = _model_name(settings, model)
    with Workspace.open(settings) as ws:
        job = ExperimentJob.of(ws)
        return job, job.report(name, span, save=save)


@ab_app.command("report")
def ab_report(
    model: ModelOpt = None,
    window: WindowOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the report as JSON instead of tables")] = False,
    config: ConfigOpt = None,
    registry_uri: RegistryOpt = None,
) -> int:
    """Judge the experiment over a window. Exit 0: ship, 1: rollback, 2: bad input, 3: continue, 4: unhealthy
    (sample ratio mismatch), 5: no data.

    Each variant's primary metric from feedback (accuracy, or the negative absolute error of a regressor); each
    challenger against the champion (the first variant) with anytime-valid intervals and the error-rate guardrail;
    the sample ratio check; the shadows against ground truth and their agreement with the champion. The report is
    kept in the prediction store: the service's shipml_experiment_* gauges show the newest one."""
    settings = _settings(config, registry_uri)
    _, report = _run(settings, model, window, since, until, save=True)
    if as_json:
        out.print_json(report.to_json())
    else:
        _print(report)
    return EXIT_CODES[report.verdict]


@ab_app.command("promote")
def ab_promote(
    model: ModelOpt = None,
    variant: Annotated[
        str | None, typer.Option("--variant", help="the variant to promote (default: the report's winner)")
    ] = None,
    reason: Annotated[str, typer.Option(help="why, kept in the registry's history")] = "",
    force: Annotated[bool, typer.Option("--force", help="with --variant: promote it whatever the verdict")] = False,
    window: WindowOpt = None,
    since: SinceOpt = None,
    until: UntilOpt = None,
    config: ConfigOpt = None,
    registry_uri: RegistryOpt = None,
) -> None:
    """Promote the experiment's winner to production. Exit 0: promoted, 1: refused (no ship verdict for that
    variant), 2: bad input.

    Runs the report, then moves the winner's version (or --variant's, with --force) to production through the
    registry; the version it replaces becomes `previous`, for `shipml models rollback`."""
    settings = _settings(config, registry_uri)
    job, report = _run(settings, model, window, since, until)
    done = job.promote(report, variant, force=force, reason=reason)
    forced = " [yellow](forced)[/]" if done.forced else ""
    if not done.moves:
        out.print(
            f"variant {escape(done.variant)}: {escape(done.name)}/{done.version} is production already; nothing to do"
        )
        return
    out.print(f"promoted variant {escape(done.variant)}: {escape(done.name)}/{done.version}{forced}")
    for m in done.moves:
        out.print(
            f"{escape(done.name)}@{m.alias}: {m.from_version or '-'} -> {m.to_version or '-'}  ({escape(m.reason)})"
        )


def _print(report: ExperimentReport) -> None:
    from datetime import UTC, datetime

    def iso(ts: float) -> str:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")

    table = Table(title=f"{escape(report.model)}: {iso(report.since)} to {iso(report.until)}, metric {report.metric}")
    for column in ("variant", "role", "model", "share", "requests", "errors", "p99 ms", "units", "labelled",
                   report.metric, "vs champion", "lift", "verdict"):  # fmt: skip
        numeric = column in ("share", "requests", "errors", "p99 ms", "units")
        table.add_column(column, justify="right" if numeric else "left")
    judged = {
        c.variant: (c.primary, f"[{_STYLE[c.decision.verdict]}]{c.decision.verdict}[/]") for c in report.challengers
    }
    judged |= {s.variant: (s.comparison, _agreement(s.agreement, s.mean_abs_difference)) for s in report.shadows}
    for v in report.variants:
        comparison, verdict = judged.get(v.name, (None, "champion" if v.name == report.champion else "-"))
        difference = lift = "-"
        if comparison is not None:
            d, lf = comparison.difference, comparison.relative_lift
            difference = _interval(d.estimate, d.lower, d.upper, "+")
            lift = _interval(lf.estimate, lf.lower, lf.upper, "%")
        table.add_row(
            escape(v.name), v.role, _reference(v.model, v.version), f"{v.share:g}",
            str(v.requests), str(v.errors), f"{v.p99_ms:.1f}" if math.isfinite(v.p99_ms) else "-", str(v.units),
            f"{v.labelled}/{v.matured}",
            _interval(v.metric.mean, v.metric.lower, v.metric.upper), difference, lift, verdict,
        )  # fmt: skip
    show(table, out)
    _print_checks(report)
    for note in report.notes:
        err.print(f"[yellow]note:[/] {escape(note)}")
    style = _STYLE[report.verdict]
    winner = f" (winner: {escape(report.winner)})" if report.winner else ""
    out.print(f"verdict: [{style}]{report.verdict}[/]{winner}")
    for reason in report.reasons:
        out.print(f"  {escape(reason)}")


def _print_checks(report: ExperimentReport) -> None:
    """The split, the guardrails and the sample sizes, one line each."""
    srm = report.srm
    split = ", ".join(
        f"{escape(v)} {n} ({s:.1%} expected)"
        for v, n, s in zip(srm.variants, srm.observed, srm.expected_share, strict=True)
    )
    health = "[red]mismatch[/]" if srm.mismatch else "[green]healthy[/]"
    out.print(f"sample ratio: {split}; {srm.test} p = {srm.p_value:.3g}: {health}")
    for c in report.challengers:
        for g in c.guardrails:
            style = {"holds": "green", "violated": "red"}.get(g.status, "yellow")
            out.print(
                f"guardrail {escape(c.variant)} {g.name}: difference [{g.lower:+.4f}, {g.upper:+.4f}], "
                f"margin {g.margin:g}: [{style}]{g.status}[/]"
            )
        size = c.sample_size
        if size is not None:
            out.print(
                f"sample size {escape(c.variant)}: {size.remaining} more units (keys with labelled predictions) "
                f"({size.required_total} in all) to detect a {size.mde:g} relative change at power {size.power:g}"
            )


def _interval(estimate: float, lower: float, upper: float, style: str = "") -> str:
    """``0.75 [0.72, 0.78]``; style "+": signed (a difference), "%": signed percentages (a lift); "-" for NaN."""
    if not math.isfinite(estimate):
        return "-"

    def show(x: float) -> str:
        return f"{x:+.1%}" if style == "%" else f"{x:+.4f}" if style == "+" else f"{x:.4f}"

    if not (math.isfinite(lower) and math.isfinite(upper)):
        return show(estimate)
    return f"{show(estimate)} [{show(lower)}, {show(upper)}]"


def _reference(model: str, version: str | None) -> str:
    """The configured reference, with the version it resolves to when that is not already in it."""
    shown = escape(model)
    return shown if version is None or model.endswith(f"/{version}") else f"{shown} (v{version})"


def _agreement(agreement: float, difference: float) -> str:
    if math.isfinite(agreement):
        return f"shadow, agrees {agreement:.1%}"
    if math.isfinite(difference):
        return f"shadow, mean |diff| {difference:.4g}"
    return "shadow"
