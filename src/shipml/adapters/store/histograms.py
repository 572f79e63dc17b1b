"""Per-minute histograms of what was served, kept as rows are written, so that a drift verdict over any
window is a sum of small arrays instead of a read of every row.

For each model version with a reference profile (``Histograms.register_profile`` in histogram_table.py), the
store writer hands every committed "ok" prediction to a ``HistogramKeeper``. It buffers them and, every
``flush_s`` seconds (and when the writer stops), counts them on the profile's buckets
(``core.binning.counts_of``: one vectorised call per feature) into the open minute of each
(model, version, variant, role), then upserts that minute's row of ``feature_histograms``.

Each worker process writes its own row per minute (``writer``: the keeper's random id and a segment number)
holding its cumulative counts, replaced at each flush: no read-modify-write, no lost update between workers,
and a reader sums the rows of a window. A minute stays in memory ``KEEP_CLOSED_MINUTES`` after it closes; a row
committed later than that (a stalled writer, a backed-up queue) opens a new segment of its minute, a row of its
own that adds to the stored ones instead of replacing them, and is forgotten as soon as it is written.

A minute is *settled* once every live keeper has written and forgotten it (``settled_before``): its stored
rows are final, up to rows committed later still. The monitor reads settled minutes from the histograms and
counts the newer ones from the raw rows, so that a report run right after traffic sees every committed row;
``shipml monitor drift --recompute`` rebuilds settled minutes only (``writer`` "recompute"), so a live keeper
never writes over a recount with counts the recount already holds. A crash loses at most the counts since the
last flush (the raw rows are committed; a recompute rebuilds them).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from shipml.core.binning import PREDICTION, Binning, ProfileBinnings, counts_of
from shipml.core.prediction import Prediction, PredictionBatch, Role, Served, Status
from shipml.core.profile import ReferenceProfile

Counts = npt.NDArray[np.int64]
MINUTE_S = 60
KEEP_CLOSED_MINUTES = 2  # a closed minute stays in memory this long after its last flush (late rows)


def settled_before(now: float, flush_s: float) -> int:
    """The first minute (Unix time // 60) that a live keeper may still hold at ``now``: every earlier one has been
    written and forgotten by keepers flushing every ``flush_s`` (a keeper forgets a clean minute at its first
    flush ``KEEP_CLOSED_MINUTES`` after the minute closed; two flush periods allow for one flush's own time)."""
    return int((now - 2.0 * flush_s) // MINUTE_S) - KEEP_CLOSED_MINUTES - 1


@dataclass(frozen=True, eq=False)
class HistogramLayout:
    """The buckets one model version counts in: its features' and its prediction's, in a fixed order.

    ``prediction``: what the profile binned of the output: "positive" (a binary classifier's probability of
    ``positive``), "label" (a multiclass classifier's predicted class) or "value" (a regressor's output)."""

    binnings: tuple[Binning, ...]  # the features', then the prediction's last
    prediction: str
    positive: str | None = None
    sha: str = field(default="")

    @classmethod
    def of(cls, profile: ReferenceProfile, task: str, positive: str | None) -> HistogramLayout:
        b = ProfileBinnings.of(profile)
        binnings = (*b.features.values(), b.prediction)
        prediction = "value" if task == "regression" else "label" if task == "multiclass" else "positive"
        described = [[x.feature, x.kind, x.buckets] for x in binnings]
        sha = hashlib.sha256(json.dumps([described, prediction, positive]).encode()).hexdigest()
        return cls(binnings, prediction, positive, sha)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(b.feature for b in self.binnings)

    def describe(self) -> str:
        """The layout as the ``histogram_layouts`` table keeps it (JSON: name, kind, buckets per part)."""
        parts = [{"feature": b.feature, "kind": b.kind, "buckets": b.buckets} for b in self.binnings]
        return json.dumps({"parts": parts, "prediction": self.prediction, "positive": self.positive})

    def split(self, flat: Counts) -> dict[str, Counts]:
        """A row's concatenated counts, per feature (the prediction under ``core.binning.PREDICTION``)."""
        out, start = {}, 0
        for b in self.binnings:
            out[b.feature] = flat[start : start + b.buckets]
            start += b.buckets
        return out


def split_described(described: str, flat: Counts) -> dict[str, Counts]:
    """``HistogramLayout.split`` from the stored description (a reader need not have the profile)."""
    out, start = {}, 0
    for part in json.loads(described)["parts"]:
        out[part["feature"]] = flat[start : start + part["buckets"]]
        start += part["buckets"]
    return out


@dataclass
class _Open:
    """One (model, version, variant, role, minute)'s cumulative counts in this process, stored as the row of
    ``segment`` (the keeper's id, and a number when the minute was reopened by a late row)."""

    counts: Counts
    segment: str
    rows: int = 0
    dirty: bool = True
    late: bool = False  # opened after the minute was settled: forgotten as soon as it is written


Key = tuple[str, str, str, str]  # model, version, variant, role


class _Pending:
    """Committed predictions of one (model, version, variant, role) not counted yet: parallel lists."""

    __slots__ = ("layout", "outs", "rows", "ts")

    def __init__(self, layout: HistogramLayout) -> None:
        self.layout = layout
        self.ts: list[float] = []
        self.rows: list[dict[str, Any]] = []
        self.outs: list[Any] = []  # what the layout bins of each (Prediction.binned)


class HistogramKeeper:
    """Buffers committed predictions and turns them into per-minute counts (see the module docstring).

    Built to stay off the service's latency: ``observe`` (called by the writer after each commit, after the
    waiters are woken) only appends references, a few hundred nanoseconds a row; counting happens in pieces
    of at most ``COUNT_EVERY`` rows, so the writer never holds the interpreter for long at once."""

    COUNT_EVERY = 1024

    def __init__(self, flush_s: float = 5.0, clock: Callable[[], float] = time.time) -> None:
        self.flush_s = flush_s
        self.clock = clock  # what "now" is for closing minutes (tests move it)
        self.writer = os.urandom(8).hex()
        self._segments = 0  # minutes reopened by late rows: each gets a row of its own
        # every minute before this one has been forgotten (if it was held): never lowered, so that a wall clock
        # stepping back cannot reopen a forgotten minute as the row it already wrote, which would replace it
        self._forgotten_below = -(2**62)
        self._layouts: dict[tuple[str, str], HistogramLayout] = {}
        self._pending: dict[Key, _Pending] = {}
        self._lock = threading.Lock()
        self._open: dict[tuple[Key, int], _Open] = {}
        self._last_flush = time.monotonic()

    def register(self, model: str, version: str, layout: HistogramLayout) -> None:
        self._layouts[(model, version)] = layout

    def layout(self, model: str, version: str) -> HistogramLayout | None:
        return self._layouts.get((model, version))

    def observe(self, units: Sequence[Sequence[Prediction] | PredictionBatch]) -> None:
        """Keep committed predictions of versions with a registered layout; count a key's pending predictions
        once there are ``COUNT_EVERY`` of them. Only answered (role primary) predictions are counted: the monitor
        reads those; a shadow's copies would only cost time. A batch of columns is counted at once, a column
        at a time (numpy)."""
        if not self._layouts:
            return
        columnar = [unit for unit in units if isinstance(unit, PredictionBatch)]
        with self._lock:
            for unit in units:
                if not isinstance(unit, PredictionBatch):
                    self._keep(unit)
            full = [key for key, slot in self._pending.items() if len(slot.ts) >= self.COUNT_EVERY]
        for key in full:
            self._count_pending(key)
        for batch in columnar:
            self._count_batch(batch)

    def _keep(self, unit: Sequence[Prediction]) -> None:
        """Append ``unit``'s answered primary predictions to their key's pending lists (under the lock)."""
        pending, layouts = self._pending, self._layouts
        served: Served | None = None
        slot: _Pending | None = None
        for p in unit:
            if p.status is not Status.OK:
                continue
            if p.served is not served:  # a unit is one variant's: a lookup per unit, not per row
                served = p.served
                slot = None
                if served.role is Role.PRIMARY:
                    key: Key = (served.model, served.version, served.variant, served.role)
                    slot = pending.get(key)
                    layout = layouts.get((served.model, served.version))
                    if slot is None and layout is not None:
                        slot = pending[key] = _Pending(layout)
            if slot is not None:
                slot.ts.append(p.ts)
                slot.rows.append(p.features)
                slot.outs.append(p.binned(slot.layout.prediction, slot.layout.positive))

    def _count_batch(self, batch: PredictionBatch) -> None:
        """Count a batch of columns into its minute (one: its predictions share one time)."""
        s = batch.served
        layout = self._layouts.get((s.model, s.version))
        if s.role is not Role.PRIMARY or layout is None or not len(batch):
            return
        key: Key = (s.model, s.version, s.variant, s.role)
        n, columns = len(batch), batch.columns

        def column(name: str) -> Any:
            found = columns.get(name)
            return [None] * n if found is None else found

        counts = _count_columns(layout, column, batch.binned(layout.prediction, layout.positive))
        self._add_counts(key, int(batch.ts // MINUTE_S), layout, counts, n)

    def _count_pending(self, key: Key) -> None:
        """Count ``key``'s pending predictions into their minutes (in pieces of ``COUNT_EVERY``)."""
        with self._lock:
            slot = self._pending.pop(key, None)
        if slot is None:
            return
        for lo in range(0, len(slot.ts), self.COUNT_EVERY):
            ts = slot.ts[lo : lo + self.COUNT_EVERY]
            rows, outs = slot.rows[lo : lo + self.COUNT_EVERY], slot.outs[lo : lo + self.COUNT_EVERY]
            first, last = int(min(ts) // MINUTE_S), int(max(ts) // MINUTE_S)
            if first == last:  # the usual case: one minute
                self._add(key, first, slot.layout, rows, outs)
                continue
            minutes = [int(t // MINUTE_S) for t in ts]
            for minute in sorted(set(minutes)):
                picked = [i for i, m in enumerate(minutes) if m == minute]
                self._add(key, minute, slot.layout, [rows[i] for i in picked], [outs[i] for i in picked])

    def _add(self, key: Key, minute: int, layout: HistogramLayout, rows: list[dict[str, Any]], outs: list[Any]) -> None:
        self._add_counts(key, minute, layout, _count(layout, rows, outs), len(rows))

    def _add_counts(self, key: Key, minute: int, layout: HistogramLayout, counts: Counts, n_rows: int) -> None:
        state = self._open.get((key, minute))
        if state is None:
            late = minute < self._forgotten_below
            segment = self.writer
            if late:
                self._segments += 1
                segment = f"{self.writer}.{self._segments}"
            width = sum(b.buckets for b in layout.binnings)
            state = self._open[(key, minute)] = _Open(np.zeros(width, np.int64), segment, late=late)
        state.counts += counts
        state.rows += n_rows
        state.dirty = True

    def due(self) -> bool:
        return time.monotonic() - self._last_flush >= self.flush_s

    def collect(self) -> list[tuple[Key, int, _Open, str]]:
        """Count what is pending into the open minutes; the minutes that changed since the last call, to upsert
        (key, minute, cumulative state, layout sha). Minutes closed for a while are forgotten, and a late minute's
        segment as soon as it is returned (a later late row opens another)."""
        self._last_flush = time.monotonic()
        with self._lock:
            keys = list(self._pending)
        for key in keys:
            self._count_pending(key)
        self._forgotten_below = max(self._forgotten_below, int(self.clock() // MINUTE_S) - KEEP_CLOSED_MINUTES)
        out = []
        for (key, minute), state in list(self._open.items()):
            if state.dirty:
                out.append((key, minute, state, self._layouts[(key[0], key[1])].sha))
                state.dirty = False
                if state.late:
                    del self._open[(key, minute)]
            elif minute < self._forgotten_below:
                del self._open[(key, minute)]
        return out

    def unflushed(self, changed: list[tuple[Key, int, _Open, str]]) -> None:
        """Minutes ``collect`` returned that could not be written: written at the next flush."""
        for key, minute, state, _ in changed:
            state.dirty = True
            if not state.late:
                continue
            known = self._open.get((key, minute))  # a forgotten late segment comes back, to be written once
            if known is None:
                self._open[(key, minute)] = state
            elif known is not state:  # another late segment opened meanwhile, not written yet: it takes these too
                known.counts += state.counts
                known.rows += state.rows


def _count(layout: HistogramLayout, feats: Sequence[dict[str, Any]], outs: list[Any]) -> Counts:
    return _count_columns(layout, lambda name: [f.get(name) for f in feats], outs)


def _count_columns(layout: HistogramLayout, column: Callable[[str], Any], outs: Any) -> Counts:
    """The counts of records whose feature ``name`` is ``column(name)`` (a list or an array) and whose binned
    outputs are ``outs``."""
    parts = []
    for b in layout.binnings[:-1]:
        values = column(b.feature)
        if b.kind == "numeric" and not (isinstance(values, np.ndarray) and values.dtype == np.float64):
            values = np.array(values, dtype=np.float64)  # None -> NaN
        parts.append(counts_of(b, values))
    pb = layout.binnings[-1]
    values = np.array(outs, dtype=np.float64) if pb.kind == "numeric" else outs
    parts.append(counts_of(pb, values))
    return np.concatenate(parts)


__all__ = ["PREDICTION", "HistogramKeeper", "HistogramLayout", "settled_before", "split_described"]
