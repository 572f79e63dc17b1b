"""The `shipml models ...` commands: the registry, aliases and their history."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from shipml.cli.app import (
    ConfigOpt,
    RegistryOpt,
    _registry,
    _settings,
    models_app,
    out,
)
from shipml.cli.tables import show

if TYPE_CHECKING:  # the registry (and MLflow) is imported by the commands that use it, not at start-up
    from shipml.adapters.registry import AliasMove

# -- models ------------------------------------------------------------------------------


@models_app.command("list")
def models_list(config: ConfigOpt = None, registry_uri: RegistryOpt = None) -> None:
    """Registered models with their latest version and aliases."""
    rows = _registry(_settings(config, registry_uri)).list_models()
    if not rows:
        out.print("no registered models yet: run `shipml train`")
        return
    table = Table("model", "latest", "production", "staging", "previous")
    for name, latest, aliases in rows:
        table.add_row(escape(name), latest, *(aliases.get(a, "-") for a in ("production", "staging", "previous")))
    show(table, out)


@models_app.command("show")
def models_show(
    ref: Annotated[str, typer.Argument(help="NAME@ALIAS or NAME/VERSION")],
    config: ConfigOpt = None,
    registry_uri: RegistryOpt = None,
) -> None:
    """One version: aliases, lineage tags, metrics."""
    from shipml.adapters.registry import ModelRef

    parsed = ModelRef.parse(ref)  # a bad reference is refused before the registry is opened (or created)
    info = _registry(_settings(config, registry_uri)).resolve(parsed)
    out.print(
        f"[bold]{info.name}/{info.version}[/]  aliases: {', '.join(info.aliases) or '-'}  created: {info.created_at:%Y-%m-%d %H:%M:%S} UTC"
    )
    out.print(f"run: {info.run_id}")
    for key, value in sorted(info.tags.items()):
        out.print(f"  {key} = {value}")
    table = Table("metric", "value")
    for metric, number in sorted(info.metrics.items()):
        table.add_row(escape(metric), f"{number:.6g}")
    show(table, out)


@models_app.command("promote")
def models_promote(
    name: str,
    version: str,
    to: Annotated[str, typer.Option(help="staging or production")] = "production",
    reason: Annotated[str, typer.Option(help="why, kept in the history")] = "",
    config: ConfigOpt = None,
    registry_uri: RegistryOpt = None,
) -> None:
    """Give a version the alias staging or production (the old production becomes previous)."""
    from shipml.pipelines.promote import promote

    done = promote(_registry(_settings(config, registry_uri)), name, version, to, reason or "manual promotion")
    if done.already:
        out.print(escape(done.summary()))
    _print_moves(list(done.moves), name)


@models_app.command("rollback")
def models_rollback(
    name: str,
    reason: Annotated[str, typer.Option(help="why, kept in the history")] = "",
    config: ConfigOpt = None,
    registry_uri: RegistryOpt = None,
) -> None:
    """Swap production and previous."""
    from shipml.pipelines.promote import rollback

    _print_moves(rollback(_registry(_settings(config, registry_uri)), name, reason or "manual rollback"), name)


def _print_moves(moves: list[AliasMove], name: str) -> None:
    for m in moves:
        out.print(f"{name}@{m.alias}: {m.from_version or '-'} -> {m.to_version or '-'}  ({escape(m.reason)})")


@models_app.command("history")
def models_history(
    name: str,
    at: Annotated[
        datetime | None, typer.Option(help="also say which version was in production at this time (UTC)")
    ] = None,
    config: ConfigOpt = None,
    registry_uri: RegistryOpt = None,
) -> None:
    """Every alias move of a model: time, user, alias, from, to, reason."""
    from shipml.pipelines.promote import holder_at

    moves = _registry(_settings(config, registry_uri)).history(name)
    table = Table("time (UTC)", "user", "alias", "from", "to", "reason")
    for m in moves:
        moved = datetime.fromisoformat(m.time).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
        table.add_row(moved, escape(m.user), m.alias, m.from_version or "-", m.to_version or "-", escape(m.reason))
    show(table, out, wrap=("reason",))
    if at is not None:
        when = at if at.tzinfo else at.replace(tzinfo=UTC)
        holder = holder_at(moves, "production", when)
        out.print(f"in production at {when.isoformat()}: {f'{name}/{holder}' if holder else 'nothing'}")


@models_app.command("compare")
def models_compare(
    name: str,
    a: str,
    b: str,
    config: ConfigOpt = None,
    registry_uri: RegistryOpt = None,
    all_rows: Annotated[
        bool, typer.Option("--all/--differences", help="show every key, or only those that differ")
    ] = True,
) -> None:
    """Metrics and params of two versions side by side; differences marked with *."""
    from shipml.pipelines.promote import compare

    rows = compare(_registry(_settings(config, registry_uri)), name, a, b)
    for kind, title in (("metric", "metrics"), ("param", "params")):
        shown = [r for r in rows if r.kind == kind and (r.differs or all_rows)]
        if not shown:
            continue
        table = Table("key", f"v{a}", f"v{b}", title=title)
        for r in shown:
            table.add_row(("[yellow]*[/] " if r.differs else "  ") + escape(r.key), escape(r.a), escape(r.b))
        show(table, out, wrap=(f"v{a}", f"v{b}"))
    if not all_rows and not any(r.differs for r in rows):
        out.print(f"v{a} and v{b} have the same metrics and params")
