"""PredictionStore: every prediction and its feedback, in SQLite (WAL) or Postgres, behind its own methods.

Nothing outside this package reads the tables with SQL: writers call ``write`` (through ``StoreWriter``),
readers ``read_window``, ``get`` and ``count``. Opening a store applies the missing migrations
(``migrations.py``); loading a model only registers its schema's slot layout (rows, no DDL).
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import sqlite3
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np
import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import Connection, Engine

from shipml.adapters.store import batches as batch_payload
from shipml.adapters.store import tables
from shipml.adapters.store.batches import PredictionBatch
from shipml.adapters.store.catalog import FeatureSlot, SchemaSlots, slots_for
from shipml.adapters.store.histograms import HistogramKeeper, HistogramLayout, split_described
from shipml.adapters.store.migrations import exclusive, migrate
from shipml.adapters.store.window import FeatureWindow, batch_window, build_window, concat
from shipml.config import redact_uri
from shipml.core.profile import ReferenceProfile
from shipml.core.schema import FeatureSchema
from shipml.errors import StoreError

LOCK_WAIT_S = 30.0  # give up on a locked SQLite file after this long
LOCK_RETRY_S = 0.0005
MAX_ROWS_PER_STATEMENT = 512
MINUTE_S = 60

_NO_SLOTS: tuple[str, ...] = ()


@dataclass(frozen=True)
class MinuteCounts:
    """One minute of one (version, variant)'s histograms, summed over the processes that served it."""

    minute: int  # Unix time // 60
    version: str
    variant: str
    rows: int
    counts: dict[str, np.ndarray]  # per feature, the prediction under core.drift.PREDICTION


@dataclass(frozen=True)
class PredictionRow:
    """One logged prediction. ``features`` are the record's values as the validator accepted them
    (float for numeric kinds, str for categoricals); ``outputs`` is the answer
    (``{"predicted_class", "probabilities"}`` or ``{"value"}``), from which the store fills ``label``
    and ``score``. ``schema_sha256`` names a schema given to ``register_schema``: its features go to
    their typed slots; a row of an unregistered schema keeps its features in the JSON column only.
    ``status`` is "ok" for a prediction, "invalid" for a record refused by validation and
    "output_invalid" for one the model answered with NaN or inf (tables.predictions.status); a row
    that is not "ok" may hold features that do not fit its schema, so it is logged with
    ``schema_sha256=""`` (JSON only)."""

    id: str
    ts: float
    model: str
    version: str
    variant: str
    features: dict[str, Any]
    outputs: dict[str, Any]
    latency_ms: float
    role: str = "primary"
    routing_key: str | None = None
    schema_sha256: str = ""
    status: str = "ok"


class PredictionStore:
    """Tables ``predictions``, ``feedback`` and ``feature_catalog`` behind one SQLAlchemy engine."""

    def __init__(self, uri: str, *, sqlite_synchronous: str = "FULL", histogram_flush_s: float = 5.0) -> None:
        self.uri = uri
        self.histograms = HistogramKeeper(histogram_flush_s)
        self._lock_path: Path | None = None  # SQLite file: writers of all processes take turns on it
        self._lock_fd: int | None = None
        self._layouts: dict[str, SchemaSlots] = {}  # schema_sha256 -> its slots, for the writer
        self._insert_sql: dict[tuple[str, ...], dict[int, str]] = {}  # slot columns -> n_rows -> INSERT
        try:
            url = sa.engine.make_url(uri)
        except sa.exc.ArgumentError as exc:
            raise StoreError(f"store.uri: cannot open {redact_uri(uri)}: {exc}") from None
        self.is_sqlite = url.get_backend_name() == "sqlite"
        engines: list[Engine] = []
        try:
            if self.is_sqlite:
                database = url.database or ""
                if database in ("", ":memory:") or "mode=memory" in uri:
                    raise StoreError(
                        f"store.uri: cannot open {redact_uri(uri)}: an in-memory SQLite database is private to one "
                        "connection, and the store's writer opens its own; use a file, e.g. "
                        "sqlite:///.shipml/predictions.db"
                    )
                Path(database).parent.mkdir(parents=True, exist_ok=True)
                self._lock_path = Path(database + ".writelock")
                self.engine: Engine = sa.create_engine(uri, connect_args={"check_same_thread": False, "timeout": 30})
                engines.append(self.engine)
                sa.event.listen(self.engine, "connect", _sqlite_pragmas(sqlite_synchronous, busy_ms=30_000))
                # The writer does not sleep in SQLite's busy handler (1 ms, then up to 100 ms back-off) when
                # another worker process holds the write lock: it retries every half millisecond itself.
                self.write_engine: Engine = sa.create_engine(
                    uri, connect_args={"check_same_thread": False, "timeout": 0}
                )
                engines.append(self.write_engine)
                sa.event.listen(self.write_engine, "connect", _sqlite_pragmas(sqlite_synchronous, busy_ms=0))
            else:
                self.engine = sa.create_engine(uri, pool_pre_ping=True)
                engines.append(self.engine)
                self.write_engine = self.engine
            migrate(self.engine, self._lock_path)
        except (ImportError, sa.exc.ArgumentError) as exc:
            _dispose(engines)
            hint = " (install the extra: pip install 'shipml[postgres]')" if "psycopg" in str(exc) else ""
            raise StoreError(f"store.uri: cannot open {redact_uri(uri)}: {exc}{hint}") from None
        except sa.exc.SQLAlchemyError as exc:
            _dispose(engines)
            reason = _reason(exc).replace(url.password, "***") if url.password else _reason(exc)
            raise StoreError(f"store.uri: cannot open {redact_uri(uri)}: {reason}") from None
        except OSError as exc:
            _dispose(engines)
            raise StoreError(f"store.uri: cannot open {redact_uri(uri)}: {exc.strerror or exc}") from None

    def register_schema(self, schema: FeatureSchema) -> SchemaSlots:
        """Record which slot holds each feature of ``schema`` (idempotent, any number of processes; no DDL).
        Rows whose ``schema_sha256`` is this schema's then fill those slots."""
        slots = slots_for(schema)
        known = self._layouts.get(slots.schema_sha256)
        if known is not None:
            return known
        entries = [
            {"schema_sha256": slots.schema_sha256, "position": f.position, "feature": f.name, "kind": f.kind,
             "slot": f.slot}
            for f in slots.features
        ]  # fmt: skip
        insert = (pg_dialect.insert if not self.is_sqlite else sqlite_dialect.insert)(tables.feature_catalog)
        try:
            with exclusive(self._lock_path), self.engine.begin() as conn:
                conn.execute(insert.on_conflict_do_nothing(), entries)
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"store: cannot register the schema {slots.schema_sha256[:12]}: {_reason(exc)}") from None
        self._layouts[slots.schema_sha256] = slots
        return slots

    def register_profile(
        self, model: str, version: str, profile: ReferenceProfile, task: str, positive: str | None
    ) -> HistogramLayout:
        """Keep per-minute histograms of ``model`` ``version``'s predictions on ``profile``'s buckets from now on
        (histograms.py). ``positive``: a binary classifier's positive class (what the profile binned)."""
        layout = HistogramLayout.of(profile, task, positive)
        insert = (pg_dialect.insert if not self.is_sqlite else sqlite_dialect.insert)(tables.histogram_layouts)
        try:
            with exclusive(self._lock_path), self.engine.begin() as conn:
                conn.execute(insert.on_conflict_do_nothing(), [{"layout_sha": layout.sha, "layout": layout.describe()}])
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"store: cannot register the profile of {model} {version}: {_reason(exc)}") from None
        self.histograms.register(model, version, layout)
        return layout

    def observe(self, rows: Sequence[PredictionRow], batches: Sequence[PredictionBatch] = ()) -> None:
        """Committed predictions, for the histograms (the writer calls this after each commit)."""
        self.histograms.observe(rows, batches)

    def flush_histograms(self, *, force: bool = False) -> int:
        """Write the minutes whose counts changed (every ``histogram_flush_s``, or now with ``force``); how many."""
        if not force and not self.histograms.due():
            return 0
        changed = self.histograms.collect()
        if not changed:
            return 0
        h = tables.feature_histograms
        entries = [
            {"model": key[0], "version": key[1], "variant": key[2], "role": key[3], "minute": minute,
             "writer": self.histograms.writer, "layout_sha": sha, "n_rows": state.rows,
             "counts": state.counts.astype("<i8").tobytes()}
            for key, minute, state, sha in changed
        ]  # fmt: skip
        insert = (pg_dialect.insert if not self.is_sqlite else sqlite_dialect.insert)(h)
        upsert = insert.on_conflict_do_update(
            index_elements=[h.c.model, h.c.minute, h.c.version, h.c.variant, h.c.role, h.c.writer],
            set_={"layout_sha": insert.excluded.layout_sha, "n_rows": insert.excluded.n_rows,
                  "counts": insert.excluded.counts},
        )  # fmt: skip
        try:
            # the engine that waits for SQLite's lock (feedback and reports write without the writers' turn)
            with self._turn(), self.engine.begin() as conn:
                conn.execute(upsert, entries)
        except BaseException:
            self.histograms.unflushed(changed)  # written at the next flush instead
            raise
        return len(entries)

    def read_histograms(
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
        try:
            with self.engine.connect() as conn:
                found = conn.execute(query.order_by(h.c.minute)).all()
                shas = sorted({r[5] for r in found})
                layouts = (
                    dict(
                        conn.execute(sa.select(lay.c.layout_sha, lay.c.layout).where(lay.c.layout_sha.in_(shas))).all()
                    )
                    if shas
                    else {}
                )
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"store: cannot read the histograms of {model!r}: {_reason(exc)}") from None
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

    def replace_histograms(
        self,
        model: str,
        since: float,
        until: float,
        minutes: Sequence[tuple[int, str, str, str, HistogramLayout, int, np.ndarray]],
    ) -> None:
        """Replace every histogram of ``model`` for the minutes starting in ``[since, until)`` with ``minutes``
        (minute, version, variant, role, layout, rows, concatenated counts), written as ``writer`` "recompute"."""
        h, lay = tables.feature_histograms, tables.histogram_layouts
        layouts = {m[4].sha: m[4].describe() for m in minutes}
        insert = (pg_dialect.insert if not self.is_sqlite else sqlite_dialect.insert)(lay)
        with self._turn(), self.engine.begin() as conn:
            conn.execute(
                sa.delete(h).where(
                    h.c.model == model, h.c.minute >= -(-since // MINUTE_S), h.c.minute * MINUTE_S < until
                )
            )
            if layouts:
                conn.execute(
                    insert.on_conflict_do_nothing(), [{"layout_sha": k, "layout": v} for k, v in layouts.items()]
                )
            if minutes:
                conn.execute(
                    sa.insert(h),
                    [{"model": model, "minute": m, "version": v, "variant": var, "role": role, "writer": "recompute",
                      "layout_sha": layout.sha, "n_rows": n, "counts": np.asarray(c).astype("<i8").tobytes()}
                     for m, v, var, role, layout, n, c in minutes],
                )  # fmt: skip

    def save_report(self, model: str, since: float, until: float, verdict: str, report: str) -> int:
        """Keep a monitoring report (JSON); its id."""
        return self._save(tables.drift_reports, "report", model, since, until, verdict, report)

    def latest_reports(self, model: str | None = None, *, limit: int = 1) -> list[dict[str, Any]]:
        """The newest stored reports (``id``, ``model``, ``created_at``, ``since``, ``until``, ``verdict``,
        ``report`` as JSON text), newest first: of ``model``, or the newest of every model when None."""
        return self._latest(tables.drift_reports, model, limit)

    def save_experiment(self, model: str, since: float, until: float, verdict: str, report: str) -> int:
        """Keep an experiment report (``ExperimentReport.to_json``); its id."""
        return self._save(tables.experiment_reports, "experiment report", model, since, until, verdict, report)

    def latest_experiments(self, model: str | None = None, *, limit: int = 1) -> list[dict[str, Any]]:
        """The newest stored experiment reports, shaped as ``latest_reports``'s."""
        return self._latest(tables.experiment_reports, model, limit)

    def _save(self, r: sa.Table, what: str, model: str, since: float, until: float, verdict: str, report: str) -> int:
        values = {"model": model, "created_at": time.time(), "since": since, "until": until, "verdict": verdict,
                  "report": report}  # fmt: skip
        try:
            with self._turn(), self.engine.begin() as conn:
                return int(conn.execute(sa.insert(r).values(**values).returning(r.c.id)).scalar_one())
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"store: cannot save the {what} of {model!r}: {_reason(exc)}") from None

    def _latest(self, r: sa.Table, model: str | None, limit: int) -> list[dict[str, Any]]:
        columns = [r.c.id, r.c.model, r.c.created_at, r.c.since, r.c.until, r.c.verdict, r.c.report]
        names = ("id", "model", "created_at", "since", "until", "verdict", "report")
        with self.engine.connect() as conn:
            if model is not None:
                query = sa.select(*columns).where(r.c.model == model).order_by(r.c.id.desc()).limit(limit)
                return [dict(zip(names, row, strict=True)) for row in conn.execute(query)]
            newest = sa.select(sa.func.max(r.c.id)).group_by(r.c.model).scalar_subquery()
            query = sa.select(*columns).where(r.c.id.in_(newest)).order_by(r.c.model)
            return [dict(zip(names, row, strict=True)) for row in conn.execute(query)]

    def save_canary(self, model: str, state: str, event: str | None = None, *, expect: float | None = None) -> bool:
        """Write the canary of ``model`` (its state as JSON) and append ``event`` (JSON) to its log, in one
        transaction. With ``expect`` (the ``updated_at`` read before), only if nobody wrote it since: False then,
        and nothing written (two controllers never both advance a step)."""
        c, e = tables.canaries, tables.canary_events
        now = time.time()
        try:
            with self._turn(), self.engine.begin() as conn:
                found = conn.execute(sa.select(c.c.updated_at).where(c.c.model == model)).scalar_one_or_none()
                if expect is not None and found != expect:
                    return False
                if found is None:
                    conn.execute(sa.insert(c).values(model=model, updated_at=now, state=state))
                else:
                    conn.execute(sa.update(c).where(c.c.model == model).values(updated_at=now, state=state))
                if event is not None:
                    conn.execute(sa.insert(e).values(model=model, ts=now, event=event))
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"store: cannot save the canary of {model!r}: {_reason(exc)}") from None
        return True

    def read_canary(self, model: str | None = None) -> list[tuple[str, float, str]]:
        """(model, updated_at, state JSON) of the canary of ``model``, or of every model when None."""
        c = tables.canaries
        query = sa.select(c.c.model, c.c.updated_at, c.c.state).order_by(c.c.model)
        if model is not None:
            query = query.where(c.c.model == model)
        try:
            with self.engine.connect() as conn:
                return [(str(m), float(u), str(s)) for m, u, s in conn.execute(query)]
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"store: cannot read canaries: {_reason(exc)}") from None

    def canary_events(self, model: str, *, since: float = 0.0) -> list[tuple[float, str]]:
        """(ts, event JSON) of the canary log of ``model`` from ``since``, oldest first."""
        e = tables.canary_events
        query = sa.select(e.c.ts, e.c.event).where(e.c.model == model, e.c.ts >= since).order_by(e.c.id)
        with self.engine.connect() as conn:
            return [(float(t), str(ev)) for t, ev in conn.execute(query)]

    def read_latencies(
        self, model: str, since: float, until: float, *, variant: str | None = None, role: str = "primary"
    ) -> np.ndarray:
        """Latency (ms) of each answered (status ok) prediction of ``model`` in ``[since, until)``; a batch's
        predictions share their batch's latency."""
        p, b = tables.predictions, tables.prediction_batches
        wanted = {"model": model, "variant": variant, "role": role, "status": "ok"}
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(sa.select(p.c.latency_ms).where(*_matching(p, since, until, **wanted))).scalars()
                single = np.fromiter(rows, dtype=np.float64)
                batches = conn.execute(
                    sa.select(b.c.latency_ms, b.c.n_rows).where(*_matching(b, since, until, **wanted))
                ).all()
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"store: cannot read latencies of {model!r}: {_reason(exc)}") from None
        if not batches:
            return single
        latency = np.array([r[0] for r in batches], dtype=np.float64)
        return np.concatenate([single, np.repeat(latency, np.array([r[1] for r in batches], dtype=np.int64))])

    def acquire_lease(self, name: str, holder: str, ttl_s: float) -> bool:
        """Take or renew the lease ``name`` for ``holder`` until ``ttl_s`` from now; False if another holder
        has it and it has not expired (one runner of a scheduled job across workers and replicas)."""
        le = tables.leases
        now = time.time()
        with self._turn(), self.engine.begin() as conn:
            if self.is_sqlite:
                conn.exec_driver_sql("SELECT 1")  # the flock above already serialises SQLite writers
            else:
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:n))"), {"n": "shipml-lease:" + name})
            found = conn.execute(sa.select(le.c.holder, le.c.expires_at).where(le.c.name == name)).first()
            if found is not None and found[0] != holder and found[1] > now:
                return False
            if found is None:
                conn.execute(sa.insert(le).values(name=name, holder=holder, expires_at=now + ttl_s))
            else:
                conn.execute(sa.update(le).where(le.c.name == name).values(holder=holder, expires_at=now + ttl_s))
        return True

    @overload
    def read_outcomes(
        self,
        model: str,
        since: float,
        until: float,
        *,
        version: str | None = None,
        variant: str | None = None,
        role: str = "primary",
        keys: Literal[False] = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]: ...

    @overload
    def read_outcomes(
        self,
        model: str,
        since: float,
        until: float,
        *,
        version: str | None = None,
        variant: str | None = None,
        role: str = "primary",
        keys: Literal[True],
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]: ...

    def read_outcomes(
        self,
        model: str,
        since: float,
        until: float,
        *,
        version: str | None = None,
        variant: str | None = None,
        role: str = "primary",
        keys: bool = False,
    ) -> tuple[np.ndarray, ...]:
        """The predictions (status ok) of ``model`` in ``[since, until)`` by ``role`` ("primary" or "shadow")
        without their features: ids, ts, label, score (what the feedback join needs, cheaper than
        ``read_window``), and with ``keys`` each row's routing key too (None where the request had none)."""
        p, b = tables.predictions, tables.prediction_batches
        wanted = {"model": model, "version": version, "variant": variant, "role": role, "status": "ok"}
        where, b_where = _matching(p, since, until, **wanted), _matching(b, since, until, **wanted)
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    sa.select(p.c.id, p.c.ts, p.c.label, p.c.score, p.c.routing_key).where(*where)
                ).all()
                blobs = conn.execute(sa.select(b.c.ts, b.c.payload).where(*b_where)).all()
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"store: cannot read predictions of {model!r}: {_reason(exc)}") from None
        ids: list[Any] = [r[0] for r in rows]
        ts: list[Any] = [np.array([r[1] for r in rows], dtype=np.float64)]
        labels: list[Any] = [np.array([r[2] for r in rows], dtype=object)]
        scores: list[Any] = [np.array([np.nan if r[3] is None else r[3] for r in rows], dtype=np.float64)]
        routing_keys: list[Any] = [r[4] for r in rows]
        for batch_ts, blob in blobs:
            decoded = batch_payload.decode(blob)
            ids.extend(decoded.ids)
            ts.append(np.full(len(decoded.ids), batch_ts, dtype=np.float64))
            labels.append(decoded.labels)
            scores.append(decoded.score)
            routing_keys.extend(decoded.routing_keys)
        found = (np.array(ids, dtype=object), np.concatenate(ts), np.concatenate(labels), np.concatenate(scores))
        return (*found, np.array(routing_keys, dtype=object)) if keys else found

    def read_feedback(self, since: float) -> dict[str, tuple[str | None, float | None]]:
        """Feedback recorded at or after ``since`` (feedback comes after its prediction): id -> (label, value)."""
        fb = tables.feedback
        with self.engine.connect() as conn:
            found = conn.execute(sa.select(fb.c.prediction_id, fb.c.label, fb.c.value).where(fb.c.ts >= since))
            return {pid: (label, value) for pid, label, value in found}

    def ensure_features(self, schema: FeatureSchema) -> None:
        """Deprecated: use ``register_schema`` (no columns are added per feature any more)."""
        warnings.warn("ensure_features is deprecated; use register_schema", DeprecationWarning, stacklevel=2)
        self.register_schema(schema)

    def write(self, rows: Sequence[PredictionRow], batches: Sequence[PredictionBatch] = ()) -> None:
        """Insert ``rows`` and ``batches`` in one transaction (see ``_row_pieces``; a batch is one row of
        ``prediction_batches``; a batch of a schema not registered here is written as rows)."""
        pieces = []
        if batches:
            encoded = []
            rows = list(rows)
            for b in batches:
                layout = self._layouts.get(b.schema_sha256)
                if layout is None or not len(b):
                    rows.extend(_as_rows(b))
                    continue
                encoded.append(
                    (b.ids[0], b.ids[-1], b.ts, b.model, b.version, b.variant, b.role, b.schema_sha256, "ok", len(b),
                     b.latency_ms, batch_payload.encode(b, layout))
                )  # fmt: skip
            if encoded:
                pieces.append((self._batch_insert(), encoded))
        pieces[:0] = self._row_pieces(rows)
        if not pieces:
            return
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                with self._turn(), self.write_engine.begin() as conn:
                    for sql, params in pieces:
                        conn.exec_driver_sql(sql, params)
                return
            except sa.exc.OperationalError as exc:
                if not (self.is_sqlite and "locked" in str(exc.orig)) or time.monotonic() > deadline:
                    raise
                time.sleep(LOCK_RETRY_S)

    def _batch_insert(self) -> str:
        marker = "?" if self.is_sqlite else "%s"
        names = ", ".join(f'"{n}"' for n in tables.BATCH_COLUMNS)
        values = ", ".join([marker] * len(tables.BATCH_COLUMNS))
        return f"INSERT INTO prediction_batches ({names}) VALUES ({values})"  # noqa: S608 - names are ours

    def _row_pieces(self, rows: Sequence[PredictionRow]) -> list[tuple[str, Any]]:  # noqa: C901 - the writer's per-row loop, kept inline (measured)
        """``rows`` as few multi-row INSERT statements.

        One statement per power-of-two piece of the batch (13 rows: 8 + 4 + 1), not one execution per
        row: the SQLite driver lets go of the GIL at every statement step, and under load each of those
        waits for the serving thread to hand it back (the GIL's switch interval), so a row per step made
        the writer the bottleneck. The statement texts are few (per slot layout and piece size), so the
        driver's statement cache keeps them. Rows are grouped by schema, each group binding only the slot
        columns its schema uses.
        """
        if not rows:
            return []
        dumps = orjson.dumps
        layouts = self._layouts
        groups: dict[str, tuple[tuple[str, ...], tuple[str, ...], list[tuple[Any, ...]]]] = {}
        for r in rows:
            group = groups.get(r.schema_sha256)
            if group is None:
                layout = layouts.get(r.schema_sha256)
                if layout is None:
                    group = groups[r.schema_sha256] = (_NO_SLOTS, _NO_SLOTS, [])
                else:
                    group = groups[r.schema_sha256] = (layout.columns, layout.names, [])
            f, o = r.features, r.outputs
            # label and score (see tables.predictions.score), inline: this loop is the writer's per-row cost
            if "value" in o:
                label, score = None, o["value"]
            else:
                proba, label = o.get("probabilities"), o.get("predicted_class")
                if label is not None and label.__class__ is not str:
                    label = str(label)
                if not proba:
                    score = None
                elif len(proba) == 2:
                    _, score = proba.values()
                else:
                    score = max(proba.values())
            group[2].append(
                (
                    r.id, r.ts, r.model, r.version, r.variant, r.role, r.routing_key, r.schema_sha256, label, score,
                    dumps(f).decode(), dumps(o).decode(), r.latency_ms, r.status, *[f.get(name) for name in group[1]],
                )
            )  # fmt: skip
        pieces: list[tuple[str, Any]] = []
        for columns, _, payload in groups.values():
            start = 0
            for size in _pieces(len(payload), self._max_rows_per_statement(len(tables.BASE_COLUMNS) + len(columns))):
                flat = tuple(itertools.chain.from_iterable(payload[start : start + size]))
                pieces.append((self._insert_for(columns, size), flat))
                start += size
        return pieces

    @contextlib.contextmanager
    def _turn(self) -> Iterator[None]:
        """Hold the file's writer lock (flock) for one transaction. The store writers of several worker
        processes then queue for SQLite's write lock, each handed it when the last commit ends, instead
        of polling for it; whatever arrives meanwhile goes into the next commit."""
        if self._lock_path is None:
            yield
            return
        if self._lock_fd is None:
            self._lock_fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _max_rows_per_statement(self, width: int) -> int:
        # SQLite allows 32,766 bound parameters since 3.32 (999 before); Postgres 65,535. Stay well below.
        limit = 30_000 if not self.is_sqlite or sqlite3.sqlite_version_info >= (3, 32) else 999
        return max(1, min(MAX_ROWS_PER_STATEMENT, limit // width))

    def _insert_for(self, columns: tuple[str, ...], n_rows: int) -> str:
        by_size = self._insert_sql.get(columns)
        if by_size is None:
            by_size = self._insert_sql[columns] = {}
        sql = by_size.get(n_rows)
        if sql is None:
            names = tables.BASE_COLUMNS + columns
            marker = "?" if self.is_sqlite else "%s"
            one = "(" + ", ".join([marker] * len(names)) + ")"
            quoted = ", ".join(f'"{n}"' for n in names)
            sql = f"INSERT INTO predictions ({quoted}) VALUES {', '.join([one] * n_rows)}"  # noqa: S608 - names are ours
            by_size[n_rows] = sql
        return sql

    def read_window(
        self,
        model: str,
        since: float,
        until: float,
        *,
        version: str | None = None,
        variant: str | None = None,
        role: str | None = "primary",
        status: str | None = "ok",
    ) -> FeatureWindow:
        """The rows of ``model`` with ``since <= ts < until`` (filtered by version, variant, role and status
        when given; by default the primary's predictions, not the refused records), features decoded
        through the catalog of each schema in the window."""
        p = tables.predictions
        wanted = {"model": model, "version": version, "variant": variant, "role": role, "status": status}
        where = _matching(p, since, until, **wanted)
        head = [p.c.ts, p.c.id, p.c.version, p.c.variant, p.c.label, p.c.score, p.c.schema_sha256]
        try:
            with self.engine.connect() as conn:
                shas = set(conn.execute(sa.select(p.c.schema_sha256).where(*where).distinct()).scalars())
                for _ in range(3):  # a schema first written between the two reads: read again with it
                    catalog = self._read_catalog(conn, shas)
                    slot_columns = sorted({c for s in catalog.values() for c in s.columns}, key=_slot_order)
                    with_json = any(s not in catalog or catalog[s].unslotted for s in shas)
                    columns = [*head, *[p.c[c] for c in slot_columns], *([p.c.features] if with_json else [])]
                    rows = conn.execute(sa.select(*columns).where(*where).order_by(p.c.ts, p.c.id)).all()
                    seen = {r[6] for r in rows}
                    if seen <= shas:
                        break
                    shas |= seen
                else:
                    raise StoreError("store: the schemas of the window kept changing while it was read")
                b = tables.prediction_batches
                query = sa.select(b.c.ts, b.c.version, b.c.variant, b.c.schema_sha256, b.c.payload)
                found = [
                    (ts, v, var, sha, batch_payload.decode(blob))
                    for ts, v, var, sha, blob in conn.execute(query.where(*_matching(b, since, until, **wanted)))
                ]
        except sa.exc.SQLAlchemyError as exc:
            raise StoreError(f"store: cannot read predictions of {model!r}: {_reason(exc)}") from None
        window = build_window(rows, slot_columns, catalog, with_json)
        return concat([window, batch_window(found)]) if found else window

    def _find_in_batches(self, conn: Connection, prediction_id: str) -> dict[str, Any] | None:
        """The row of ``prediction_id`` if a batch holds it (see batches.py for the id range scan)."""
        b = tables.prediction_batches
        columns = [b.c[n] for n in ("ts", "model", "version", "variant", "role", "schema_sha256", "status",
                                    "latency_ms", "payload")]  # fmt: skip
        query = (
            sa.select(*columns)
            .where(b.c.first_id <= prediction_id, b.c.first_id >= batch_payload.id_floor(prediction_id))
            .where(b.c.last_id >= prediction_id)
            .order_by(b.c.first_id.desc())
        )
        for ts, model, version, variant, role, sha, status, latency_ms, blob in conn.execute(query):
            decoded = batch_payload.decode(blob)
            try:
                i = decoded.ids.index(prediction_id)
            except ValueError:
                continue
            features, outputs = decoded.record(i)
            label, score = decoded.labels[i], decoded.score[i]
            return {
                "id": prediction_id, "ts": ts, "model": model, "version": version, "variant": variant, "role": role,
                "routing_key": decoded.routing_keys[i], "schema_sha256": sha, "label": label,
                "score": None if score != score else float(score), "features": features, "outputs": outputs,
                "latency_ms": latency_ms, "status": status,
            }  # fmt: skip
        return None

    def _read_catalog(self, conn: Connection, shas: set[str]) -> dict[str, SchemaSlots]:
        """The slot layouts of ``shas`` as stored (another process may have registered them)."""
        if not shas:
            return {}
        c = tables.feature_catalog
        found: dict[str, list[FeatureSlot]] = {}
        query = sa.select(c.c.schema_sha256, c.c.position, c.c.feature, c.c.kind, c.c.slot)
        for sha, position, name, kind, slot in conn.execute(query.where(c.c.schema_sha256.in_(sorted(shas)))):
            found.setdefault(sha, []).append(FeatureSlot(position, name, kind, slot))
        return {sha: SchemaSlots(sha, tuple(sorted(fs, key=lambda f: f.position))) for sha, fs in found.items()}

    def add_feedback(self, prediction_id: str, label: str | None, value: float | None) -> bool:
        """Record ground truth for a prediction; False if no such prediction. Later feedback replaces earlier."""
        p, fb = tables.predictions, tables.feedback
        with self.engine.begin() as conn:
            found = conn.execute(sa.select(p.c.id).where(p.c.id == prediction_id)).first()
            if found is None and self._find_in_batches(conn, prediction_id) is None:
                return False
            conn.execute(sa.delete(fb).where(fb.c.prediction_id == prediction_id))
            conn.execute(sa.insert(fb).values(prediction_id=prediction_id, ts=time.time(), label=label, value=value))
        return True

    def get_feedback(self, prediction_id: str) -> dict[str, Any] | None:
        """The feedback recorded for a prediction (``ts``, ``label``, ``value``), or None."""
        fb = tables.feedback
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(fb.c.ts, fb.c.label, fb.c.value).where(fb.c.prediction_id == prediction_id)
            ).first()
        return None if row is None else {"ts": row[0], "label": row[1], "value": row[2]}

    def get(self, prediction_id: str) -> dict[str, Any] | None:
        """One logged row (any status): the base columns, ``status`` among them, with ``features`` and
        ``outputs`` decoded; None if unknown."""
        p = tables.predictions
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(*[p.c[n] for n in tables.BASE_COLUMNS]).where(p.c.id == prediction_id)).first()
            if row is None:
                return self._find_in_batches(conn, prediction_id)
        out = dict(zip(tables.BASE_COLUMNS, row, strict=True))
        out["features"] = orjson.loads(out["features"])
        out["outputs"] = orjson.loads(out["outputs"])
        return out

    def count(
        self,
        model: str | None = None,
        *,
        version: str | None = None,
        variant: str | None = None,
        role: str | None = None,
        since: float | None = None,
        until: float | None = None,
        status: str | None = "ok",
    ) -> int:
        """How many rows match, ``since <= ts < until``: without arguments, every prediction (status "ok");
        ``status=None`` counts every logged row, refused records included."""
        wanted = {"model": model, "version": version, "variant": variant, "role": role, "status": status}
        total = 0
        with self.engine.connect() as conn:
            for table, how_many in (
                (tables.predictions, sa.func.count()),
                (tables.prediction_batches, sa.func.coalesce(sa.func.sum(tables.prediction_batches.c.n_rows), 0)),
            ):
                query = sa.select(how_many).select_from(table).where(*_matching(table, since, until, **wanted))
                total += int(conn.execute(query).scalar_one())
        return total

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        self.engine.dispose()
        self.write_engine.dispose()


def _as_rows(batch: PredictionBatch) -> list[PredictionRow]:
    """A batch as rows of ``predictions`` (its schema is not registered with this store)."""
    out = []
    for i, prediction_id in enumerate(batch.ids):
        if batch.proba is not None:
            outputs: dict[str, Any] = {
                "predicted_class": (batch.labels or [])[i],
                "probabilities": dict(zip(batch.classes or (), batch.proba[i], strict=True)),
            }
        else:
            outputs = {"value": (batch.values or [])[i]}
        key = batch.routing_keys[i] if batch.routing_keys is not None else None
        out.append(
            PredictionRow(prediction_id, batch.ts, batch.model, batch.version, batch.variant, dict(batch.features[i]),
                          outputs, batch.latency_ms, batch.role, key, batch.schema_sha256)
        )  # fmt: skip
    return out


def _matching(table: sa.Table, since: float | None, until: float | None, **wanted: str | None) -> list[Any]:
    """The conditions every read of rows shares: each named column equal to its value (None: any value), and
    ``since <= ts < until`` (None: open)."""
    where: list[Any] = [table.c[name] == value for name, value in wanted.items() if value is not None]
    if since is not None:
        where.append(table.c.ts >= since)
    if until is not None:
        where.append(table.c.ts < until)
    return where


def _slot_order(column: str) -> tuple[bool, int]:
    return column[0] != "n", int(column[1:])


def _sqlite_pragmas(synchronous: str, busy_ms: int) -> Any:
    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout=30000")  # the WAL switch itself may wait for another process
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute(f"PRAGMA busy_timeout={int(busy_ms)}")
        cur.close()

    return on_connect


def _pieces(n: int, largest: int) -> list[int]:
    """``n`` as a sum of powers of two no larger than ``largest`` (rounded down to one), biggest first."""
    top = 1 << (max(1, largest).bit_length() - 1)
    out = [top] * (n // top)
    rest = n % top
    bit = top >> 1
    while rest:
        if rest >= bit:
            out.append(bit)
            rest -= bit
        bit >>= 1
    return out


def _reason(exc: sa.exc.SQLAlchemyError) -> str:
    """The driver's own message, on one line (SQLAlchemy's adds the statement and a link)."""
    orig = getattr(exc, "orig", None)
    return " ".join(str(orig if orig is not None else exc).split())


def _dispose(engines: list[Engine]) -> None:
    for engine in engines:
        engine.dispose()
