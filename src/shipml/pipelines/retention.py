"""The retention use case: prune the store (`shipml store prune`, and the service's schedule), refusing a cut that
would remove what is still needed.

A cut is refused (``PruneRefused``, exit 2, naming why) when it falls inside ``monitor.label_delay_s`` (those
predictions still wait for their feedback), and while a canary is serving (running, held or promoting) or the
config serves an experiment (``serve.variants`` or ``serve.shadow``): their evidence is the store's rows, and a
prune waits for them to end. Histograms, reports and canary events go on their own horizon,
``store.retention.history``, never before the predictions. On Postgres the days ahead are made first (the prune
also does the service's maintenance).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from shipml.adapters.store import PredictionStore
from shipml.adapters.store.retention import Pruned
from shipml.config import Settings
from shipml.core.window import duration_s
from shipml.errors import ConfigError, PruneRefused


@dataclass(frozen=True)
class Cut:
    """How old a prediction must be to go: ``keep_s`` seconds, from ``text`` given as ``what``."""

    what: str
    text: str
    keep_s: float


def cut_of(settings: Settings, older_than: str | None) -> Cut:
    """The cut asked for (default: ``store.retention.predictions``), refused when the settings alone say so (the
    label delay, an experiment in the config): checked before the store is opened."""
    what = "--older-than" if older_than is not None else "store.retention.predictions"
    text = older_than if older_than is not None else settings.store.retention.predictions
    if text is None:
        raise ConfigError(["--older-than: required (store.retention.predictions is not set), e.g. --older-than 90d"])
    keep_s = duration_s(text, what)
    delay = settings.monitor.label_delay_s
    if keep_s < delay:
        raise PruneRefused(
            f"{what} {text}: inside the label delay (monitor.label_delay_s: {delay:g} s): predictions that young "
            "still wait for their feedback"
        )
    serve = settings.serve
    if serve.variants or serve.shadow:
        names = [v.name for v in serve.variants] + [s.name for s in serve.shadow]
        raise PruneRefused(
            f"{what} {text}: an experiment is running (serve.variants/serve.shadow: {', '.join(names)}); prune once "
            "it has ended"
        )
    return Cut(what, text, keep_s)


def prune(
    settings: Settings,
    store: PredictionStore,
    older_than: str | None,
    *,
    dry_run: bool = False,
    now: float | None = None,
) -> Pruned:
    """Remove (``dry_run``: count) the predictions older than ``older_than`` (default:
    ``store.retention.predictions``) and their feedback, and the history past its own horizon."""
    cut = cut_of(settings, older_than)
    for canary in store.canaries.all():
        if canary.serving:
            raise PruneRefused(
                f"{cut.what} {cut.text}: the canary of {canary.model!r} (version {canary.candidate}, {canary.status} "
                f"since {_iso(canary.started_at)}) is running; prune once it has ended (shipml deploy status)"
            )
    retention = settings.store.retention
    now = time.time() if now is None else now
    history_s = None if retention.history is None else max(cut.keep_s, duration_s(retention.history, "history"))
    if not dry_run:
        store.partitions.ensure(settings.store.partitions_ahead_days, now=now)
    return store.retention.prune(
        now - cut.keep_s,
        None if history_s is None else now - history_s,
        batch_rows=retention.batch_rows,
        dry_run=dry_run,
    )


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
