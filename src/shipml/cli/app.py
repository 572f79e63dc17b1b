"""The `shipml` typer app: its sub-apps, consoles, shared options and the entry point."""

from __future__ import annotations

import inspect
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Protocol

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from shipml.cli.tables import show
from shipml.config import DEFAULT_CONFIG, Settings, load_settings
from shipml.core.quiet_imports import freeze_heap
from shipml.errors import Findings, ShipmlError

if TYPE_CHECKING:  # imported when a command needs it: MLflow takes a second to import
    from shipml.adapters.registry import MlflowRegistry

app = typer.Typer(
    help="shipml: from a CSV to a registered, promoted, served model.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
models_app = typer.Typer(
    help="Registered models: list, show, promote, rollback, compare, history.", no_args_is_help=True
)
schema_app = typer.Typer(help="Feature schemas.", no_args_is_help=True)
example_app = typer.Typer(help="Example data sets.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys of the prediction service.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(schema_app, name="schema")
app.add_typer(example_app, name="example")
app.add_typer(keys_app, name="keys")

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", "-c", help=f"config file (default: ./{DEFAULT_CONFIG} if present)")
]
RegistryOpt = Annotated[
    str | None, typer.Option("--registry-uri", help="MLflow tracking/registry URI (env SHIPML_REGISTRY_URI)")
]
# a window over the prediction store (`monitor`, `ab`)
WindowOpt = Annotated[str | None, typer.Option("--window", "-w", help="window ending now: 30m, 24h, 7d (default 24h)")]
SinceOpt = Annotated[str | None, typer.Option("--since", help="window start: ISO 8601 or Unix seconds")]
UntilOpt = Annotated[str | None, typer.Option("--until", help="window end (default: now)")]


def _settings(config: Path | None, registry_uri: str | None = None) -> Settings:
    overrides = {"registry": {"uri": registry_uri}} if registry_uri else None
    return load_settings(config, overrides=overrides)


def _registry(settings: Settings) -> MlflowRegistry:
    from shipml.adapters.registry import MlflowRegistry

    return MlflowRegistry(settings.registry)


@contextmanager
def _progress() -> Iterator[Any]:
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    ) as bar:
        yield bar


def _print_report(report: Findings) -> None:
    if not report.issues:
        out.print(f"[green]✔[/] {report.source}: {report.rows} rows, {report.columns} columns, all checks passed")
        return
    table = Table(title=f"{report.source}: {report.rows} rows, {report.columns} columns")
    for col in ("column", "rule", "failing", "examples", "severity"):
        table.add_column(col, justify="right" if col == "failing" else "left")
    for i in report.issues:
        style = "red" if i.severity == "error" else "yellow"
        table.add_row(
            escape(i.column),
            escape(i.label),
            str(i.failing),
            escape(", ".join(i.examples)),
            f"[{style}]{i.severity}[/]",
        )
    show(table, out, wrap=("rule", "examples"))
    mark = "[green]✔ passed[/]" if report.passed else "[red]✘ failed[/]"
    out.print(f"{mark}: {len(report.errors)} error(s), {len(report.issues) - len(report.errors)} warning(s)")


def main() -> None:
    """Entry point: user mistakes become one line on stderr and exit code 2, never a traceback."""
    from shipml.adapters.registry import quiet_mlflow

    quiet_mlflow()  # MLflow's and alembic's INFO lines and warnings are not the user's business
    command = typer.main.get_command(app)
    _unwrap_help(command)
    freeze_heap()  # what the imports made, out of the collector's reach for a training run's or a server's life
    try:
        rc = command(standalone_mode=False)
    except ShipmlError as exc:
        for line in exc.lines():
            err.print(f"[red]error:[/] {escape(line)}", highlight=False)
        sys.exit(exc.exit_code)
    except typer.Abort:
        err.print("aborted")
        sys.exit(130)
    except typer.TyperException as exc:  # typer's own copy of click's errors: an unknown command, a bad option...
        sys.exit(_usage_error(exc))
    sys.exit(rc if isinstance(rc, int) else 0)


def _unwrap_help(command: Any) -> None:
    """Join the source's line breaks inside each paragraph of every command's help, so the terminal wraps it at
    its own width (typer keeps them in the paragraphs after the first: a docstring wrapped at 120 columns came out
    ragged at 80). A paragraph of list items or indented lines keeps its breaks."""
    if command.help:  # typer's command classes (its own copy of click's): duck-typed
        paragraphs = inspect.cleandoc(command.help).split("\n\n")
        command.help = "\n\n".join(p if _kept_as_written(p) else " ".join(p.split("\n")) for p in paragraphs)
    for sub in getattr(command, "commands", {}).values():
        _unwrap_help(sub)


def _kept_as_written(paragraph: str) -> bool:
    return any(line.startswith((" ", "- ", "* ", "\b")) for line in paragraph.split("\n"))


class _CommandContext(Protocol):
    """What a usage error knows of the command it came from (typer does not export its context's class)."""

    @property
    def command_path(self) -> str: ...

    def get_usage(self) -> str: ...


def _usage_error(exc: typer.TyperException) -> int:
    """The command's usage line and one error line saying where to look next; the exit code (2 for usage).

    A group run without its command (``shipml models``) has already printed its help: nothing more to say."""
    message = exc.format_message().strip()
    if not message:
        return exc.exit_code
    ctx: _CommandContext | None = getattr(exc, "ctx", None) or _context_of(sys.argv[1:])
    hint = ""
    if ctx is not None:
        err.print(ctx.get_usage(), markup=False, highlight=False)
        hint = f" (see '{ctx.command_path} --help')"
    err.print(f"[red]error:[/] {escape(message)}{escape(hint)}", highlight=False)
    return exc.exit_code


def _context_of(args: list[str]) -> _CommandContext:
    """The context of the innermost command that ``args`` name, for errors raised without one (an option
    missing its value): the group's words are followed down, everything else is left unparsed."""
    from typer.core import TyperGroup

    command = typer.main.get_command(app)
    ctx = command.make_context("shipml", [], resilient_parsing=True)
    for word in args:
        if not isinstance(command, TyperGroup) or word.startswith("-"):
            break
        found = command.get_command(ctx, word)
        if found is None:
            break
        command = found
        ctx = command.make_context(word, [], parent=ctx, resilient_parsing=True)
    return ctx
