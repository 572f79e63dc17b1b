"""The `shipml store ...` commands: the prediction store's upkeep (prune)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer

from shipml.cli.app import ConfigOpt, _settings, app, out

if TYPE_CHECKING:
    from shipml.adapters.store.retention import Pruned

store_app = typer.Typer(help="The prediction store: prune what is past its retention.", no_args_is_help=True)
app.add_typer(store_app, name="store")


@store_app.command("prune")
def store_prune(
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than", help="remove predictions older than this: 90d, 12w (default: store.retention.predictions)"
        ),
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print what would go; change nothing")] = False,
    config: ConfigOpt = None,
) -> int:
    """Remove predictions older than --older-than, their batches and feedback; histograms, reports and canary events
    go on their own horizon (store.retention.history). Postgres drops whole days (daily partitions); SQLite deletes
    in short batches while the service writes on. Refused (exit 2) inside monitor.label_delay_s, and while a canary
    or an experiment runs."""
    from shipml.adapters.store import PredictionStore
    from shipml.pipelines.retention import cut_of, prune

    settings = _settings(config)
    cut_of(settings, older_than)  # a bad flag or a refusal by the settings: before the store is opened
    # A prune's deletes need not survive a power cut (the next prune does them again): on SQLite its commits skip
    # the fsync that the service's writers wait on (synchronous NORMAL, in WAL mode), so they share the disk less.
    store = PredictionStore.open(settings.store.model_copy(update={"sqlite_synchronous": "NORMAL"}))
    try:
        pruned = prune(settings, store, older_than, dry_run=dry_run)
    finally:
        store.close()
    show_pruned(pruned)
    return 0


def show_pruned(p: Pruned) -> None:
    """What went (or would go), one line per kind, and the time it took."""
    verb = "would remove" if p.dry_run else "removed"
    out.print(f"predictions before {_iso(p.cut)}: {verb}", highlight=False)
    if p.partitions:
        rows = f"{p.partition_rows:,} rows" if p.dry_run else f"about {p.partition_rows:,} rows"
        out.print(f"  daily partitions: {len(p.partitions)} ({', '.join(p.partitions)}), {rows}", highlight=False)
    out.print(f"  predictions: {p.predictions:,} (of them in batches: {p.batches:,} batch rows)", highlight=False)
    out.print(f"  feedback: {p.feedback:,}", highlight=False)
    if p.history_cut is None:
        out.print("  histograms, reports, canary events: kept (store.retention.history: null)", highlight=False)
    else:
        out.print(
            f"  before {_iso(p.history_cut)}: histograms {p.histograms:,}, reports {p.reports:,}, canary events "
            f"{p.canary_events:,}",
            highlight=False,
        )
    out.print(f"{'dry run' if p.dry_run else 'pruned'} in {p.seconds:.2f} s", highlight=False)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
