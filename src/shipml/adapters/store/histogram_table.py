"""The histograms part of the store: the per-minute histograms (histograms.py counts them) in their tables.

``register_profile`` names the buckets a model version's predictions are counted in; the writer hands every
commit to ``observe`` and calls ``flush`` every ``histogram_flush_s``; the monitor reads minutes back summed
over the processes that wrote them (``read``), up to the minutes live keepers may still hold (``settled_before``:
it counts those from the rows), and rebuilds settled minutes from the rows (``replace``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import sqlalchemy as sa

from shipml.adapters.store import tables
from shipml.adapters.store.engine import Database
from shipml.adapters.store.histograms import HistogramKeeper, HistogramLayout, settled_before, split_described
from shipml.core.prediction import Prediction, PredictionBatch
from shipml.core.profile import ReferenceProfile

MINUTE_S = 60


@dataclass(frozen=True)
class MinuteCounts:
    """One minute of one (version, variant)'s histograms, summed over the processes that served it."""

    minute: int  # Unix time // 60
    version: str
    variant: str
    rows: int
    counts: dict[str, np.ndarray]  # per feature, the prediction under core.binning.PREDICTION


@dataclass(frozen=True)
class Recount:
    """One minute of one (version, variant, role)'s histograms counted again from the stored rows
    (``shipml monitor drift --recompute``): ``rows`` predictions, ``counts`` on ``layout``'s buckets, concatenated."""

    minute: int  # Unix time // 60
    version: str
    variant: str
    role: str
    layout: HistogramLayout
    rows: int
    counts: np.ndarray


class Histograms:
    """Tables ``feature_histograms`` and ``histogram_layouts``; ``keeper`` counts this process's predictions."""

    def __init__(self, database: Database, flush_s: float = 5.0) -> None:
        self._db = database
        self.keeper = HistogramKeeper(flush_s)

    def register_profile(
        self, model: str, version: str, profile: ReferenceProfile, task: str, positive: str | None
    ) -> HistogramLayout:
        """Keep per-minute histograms of ``model`` ``version``'s predictions on ``profile``'s buckets from now on
        (histograms.py). ``positive``: a binary classifier's positive class (what the profile binned)."""
        layout = HistogramLayout.of(profile, task, positive)
        insert = self._db.insert(tables.histogram_layouts)
        with self._db.writing(f"cannot register the profile of {model} {version}") as conn:
            conn.execute(insert.on_conflict_do_nothing(), [{"layout_sha": layout.sha, "layout": layout.describe()}])
        self.keeper.register(model, version, layout)
        return layout

    def observe(self, units: Sequence[Sequence[Prediction] | PredictionBatch]) -> None:
        """Committed predictions, for the histograms (the writer calls this after each commit)."""
        self.keeper.observe(units)

    def flush(self, *, force: bool = False) -> int:
        """Write the minutes whose counts changed (every ``histogram_flush_s``, or now with ``force``); how many."""
        if not force and not self.keeper.due():
            return 0
        changed = self.keeper.collect()
        if not changed:
            return 0
        h = tables.feature_histograms
        entries = [
            {"model": key[0], "version": key[1], "variant": key[2], "role": key[3], "minute": minute,
             "writer": state.segment, "layout_sha": sha, "n_rows": state.rows,
             "counts": state.counts.astype("<i8").tobytes()}
            for key, minute, state, sha in changed
        ]  # fmt: skip
        insert = self._db.insert(h)
        upsert = insert.on_conflict_do_update(
            index_elements=[h.c.model, h.c.minute, h.c.version, h.c.variant, h.c.role, h.c.writer],
            set_={"layout_sha": insert.excluded.layout_sha, "n_rows": insert.excluded.n_rows,
                  "counts": insert.excluded.counts},
        )  # fmt: skip
        try:
            # the engine that waits for SQLite's lock (feedback writes without the writers' turn)
            with self._db.writing("cannot write the histograms") as conn:
                conn.execute(upsert, entries)
        except BaseException:
            self.keeper.unflushed(changed)  # written at the next flush instead
            raise
        return len(entries)

    def settled_before(self, now: float | None = None) -> float:
        """The start (Unix time, a whole minute) of the first minute a live keeper may still hold at ``now``
        (histograms.settled_before): the stored rows of every earlier minute are complete."""
        at = self.keeper.clock() if now is None else now
        return float(settled_before(at, self.keeper.flush_s) * MINUTE_S)

    def read(
        self,
        model: str,
        since: float,
        until: float,
        *,
        version: str | None = None,
        variant: str | None = None,
        role: str = "primary",
    ) -> list[MinuteCounts]:
        """The per-minute histograms of ``model`` for the minutes that start in ``[since, until)``, ordered by
        minute, each summed over the processes that wrote it."""
        h, lay = tables.feature_histograms, tables.histogram_layouts
        where = [
            h.c.model == model,
            h.c.role == role,
            h.c.minute >= -(-since // MINUTE_S),
            h.c.minute * MINUTE_S < until,
        ]
        if version is not None:
            where.append(h.c.version == version)
        if variant is not None:
            where.append(h.c.variant == variant)
        query = sa.select(h.c.minute, h.c.version, h.c.variant, h.c.n_rows, h.c.counts, h.c.layout_sha).where(*where)
        with self._db.reading(f"cannot read the histograms of {model!r}") as conn:
            found = conn.execute(query.order_by(h.c.minute)).all()
            shas = sorted({r[5] for r in found})
            layouts = (
                dict(conn.execute(sa.select(lay.c.layout_sha, lay.c.layout).where(lay.c.layout_sha.in_(shas))).all())
                if shas
                else {}
            )
        summed: dict[tuple[int, str, str], MinuteCounts] = {}
        for minute, v, var, n_rows, blob, sha in found:
            counts = split_described(layouts[sha], np.frombuffer(bytes(blob), dtype="<i8").astype(np.int64))
            known = summed.get((minute, v, var))
            if known is None:
                summed[(minute, v, var)] = MinuteCounts(minute, v, var, n_rows, counts)
                continue
            merged = {k: known.counts[k] + c for k, c in counts.items() if k in known.counts}
            summed[(minute, v, var)] = MinuteCounts(minute, v, var, known.rows + n_rows, merged)
        return list(summed.values())

    def replace(
        self, model: str, since: float, until: float, minutes: Sequence[Recount], *, now: float | None = None
    ) -> float:
        """Replace every histogram of ``model`` for the settled minutes starting in ``[since, until)`` with
        ``minutes`` (written as ``writer`` "recompute"); the end of what was replaced, ``until`` or the start of
        the first unsettled minute (``settled_before``), whichever is earlier. Unsettled minutes are left to the
        keepers that still hold them: a recount of them would be written over by their next flush, counted twice."""
        h, lay = tables.feature_histograms, tables.histogram_layouts
        end = min(until, self.settled_before(now))
        first, stop = -(-since // MINUTE_S), -(-end // MINUTE_S)  # minutes starting in [since, end)
        kept = [m for m in minutes if first <= m.minute < stop]
        layouts = {m.layout.sha: m.layout.describe() for m in kept}
        insert = self._db.insert(lay)
        with self._db.writing(f"cannot replace the histograms of {model!r}") as conn:
            conn.execute(sa.delete(h).where(h.c.model == model, h.c.minute >= first, h.c.minute < stop))
            if layouts:
                conn.execute(
                    insert.on_conflict_do_nothing(), [{"layout_sha": k, "layout": v} for k, v in layouts.items()]
                )
            if kept:
                conn.execute(
                    sa.insert(h),
                    [{"model": model, "minute": m.minute, "version": m.version, "variant": m.variant, "role": m.role,
                      "writer": "recompute", "layout_sha": m.layout.sha, "n_rows": m.rows,
                      "counts": np.asarray(m.counts).astype("<i8").tobytes()}
                     for m in kept],
                )  # fmt: skip
        return max(since, end)
