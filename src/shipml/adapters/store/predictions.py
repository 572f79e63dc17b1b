"""The predictions part of the store: the row writer's path (``write``) and every read of logged rows.

Predictions (``core.prediction.Prediction``) are written by ``StoreWriter`` (writer.py) through ``write``, in
units (one request's chunk of one variant each), and the store chooses their encoding: a unit of at least
``BATCH_MIN_ROWS`` answered predictions of a registered schema is one row of ``prediction_batches``
(batches.py), anything else rows of ``predictions`` (multi-row INSERTs). Reads (``read_window``,
``read_outcomes``, ``read_latencies``, ``get``, ``count``) see both tables alike. ``register_schema`` records a
schema's slot layout in the catalog (rows, no DDL), so its features go to typed columns.

Past ~400 lines: the write path and the reads of one table pair belong together (each read is a filter
over both encodings).
"""

from __future__ import annotations

import itertools
import sqlite3
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from shipml.adapters.store import batches as batch_payload
from shipml.adapters.store import tables
from shipml.adapters.store.catalog import FeatureSlot, SchemaSlots, slots_for
from shipml.adapters.store.engine import Database
from shipml.adapters.store.host_link import HostLink
from shipml.adapters.store.partitions import Coverage
from shipml.adapters.store.window import FeatureWindow, Outcomes, batch_window, build_window, concat
from shipml.core.ids import uuid7_seconds
from shipml.core.prediction import Prediction, PredictionBatch, Role, Served, Status, score_of
from shipml.core.records import FieldError
from shipml.core.schema import FeatureSchema
from shipml.errors import StoreError

LOCK_WAIT_S = 30.0  # give up on a locked SQLite file after this long
LOCK_RETRY_S = 0.0005
MAX_ROWS_PER_STATEMENT = 512
# A unit with at least this many answered predictions is logged as one row of columns (batches.py): at 10,000
# rows the per-row log cost more than the prediction.
BATCH_MIN_ROWS = 64

# A streamed read of the window (``stream_window``) holds about this many rows at a time by default (the monitor
# passes ``monitor.recompute_chunk_rows``), and fetches this many rows of ``prediction_batches`` at once.
ROWS_PER_CHUNK = 50_000
BATCHES_PER_FETCH = 16

_NO_SLOTS: tuple[str, ...] = ()
# A row's ts and its id's time are read from one clock at once; an id may run ahead when a millisecond's 4,096
# ids run out (it borrows the next). A minute covers both, and keeps a lookup in one day's partition.
ID_TIME_SLACK_S = 60.0


class Predictions:
    """Tables ``predictions``, ``prediction_batches`` and ``feature_catalog``."""

    def __init__(self, database: Database) -> None:
        self._db = database
        # the write path's names for what the database holds (kept as the writer's code reads them)
        self.write_engine, self.is_sqlite = database.write_engine, database.is_sqlite
        self._layouts: dict[str, SchemaSlots] = {}  # schema_sha256 -> its slots, for the writer
        self._insert_sql: dict[tuple[str, ...], dict[int, str]] = {}  # slot columns -> n_rows -> INSERT
        # Postgres: called with the rows of a commit that fell on a day without its partition (the DEFAULT
        # partition took them; the service counts them in shipml_store_default_partition_rows_total)
        self.on_default_rows: Callable[[int], None] | None = None
        self._coverage = Coverage(database)
        # SQLite served by several workers: the link to the host's writer process (host_writer.py), set by the
        # service at startup; None: this process commits its rows itself
        self.host: HostLink | None = None

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
        insert = self._db.insert(tables.feature_catalog)
        with self._db.writing(f"cannot register the schema {slots.schema_sha256[:12]}") as conn:
            conn.execute(insert.on_conflict_do_nothing(), entries)
        self._layouts[slots.schema_sha256] = slots
        return slots

    def write(self, units: Sequence[Sequence[Prediction] | PredictionBatch]) -> None:
        """Insert ``units`` of predictions in one transaction: each unit's answered predictions as one row of
        ``prediction_batches`` when there are at least ``BATCH_MIN_ROWS`` of one registered schema, every
        other prediction as a row of ``predictions`` (see ``_row_pieces``). A ``PredictionBatch`` is encoded
        from its columns as they are. Idempotent: a row already stored (a retry of a commit that did commit)
        is left as it is."""
        rows: list[Prediction] = []
        encoded = []
        for unit in units:
            if isinstance(unit, PredictionBatch):
                columnar = self._as_columnar(unit)
                if columnar is None:
                    rows.extend(unit.predictions())
                else:
                    encoded.append(columnar)
                continue
            batch = self._as_batch(unit) if len(unit) >= BATCH_MIN_ROWS else None
            if batch is None:
                rows.extend(unit)
                continue
            encoded.append(batch)
            if batch[9] < len(unit):  # the unit's refused records, as rows
                rows.extend(p for p in unit if p.status is not Status.OK)
        pieces = self._row_pieces(rows)
        if encoded:
            pieces.append((self._batch_insert(), encoded))
        if not pieces:
            return
        # SQLite with several workers: the host's writer process commits them with the other workers' (one
        # commit, one fsync); unreachable (killed, restarting), this process commits them itself
        if self.host is None or not self.host.write(pieces):
            execute_pieces(self._db, pieces)
        self._count_unpartitioned(rows, encoded)

    def _count_unpartitioned(self, rows: Sequence[Prediction], batches: Sequence[tuple[Any, ...]]) -> None:
        """Postgres: report the rows just committed on a day without its partition (``on_default_rows``)."""
        if self.on_default_rows is None or self.is_sqlite:
            return
        unpartitioned = self._coverage.outside([(p.ts, 1) for p in rows] + [(b[2], b[9]) for b in batches])
        if unpartitioned:
            self.on_default_rows(unpartitioned)

    def _as_batch(self, unit: Sequence[Prediction]) -> tuple[Any, ...] | None:
        """The row of ``prediction_batches`` holding ``unit``'s answered predictions, if they are enough and of one
        variant of a registered schema (else None: rows)."""
        ok = [p for p in unit if p.status is Status.OK]
        if len(ok) < BATCH_MIN_ROWS:
            return None
        s = ok[0].served
        layout = self._layouts.get(s.schema_sha256)
        if layout is None or any(p.served is not s for p in ok):
            return None
        return (ok[0].id, ok[-1].id, ok[0].ts, s.model, s.version, s.variant, str(s.role), s.schema_sha256, Status.OK.value,
                len(ok), ok[0].latency_ms, batch_payload.encode(ok, layout))  # fmt: skip

    def _as_columnar(self, batch: PredictionBatch) -> tuple[Any, ...] | None:
        """``_as_batch`` of a batch of columns (None when its schema is not registered or it is small: rows)."""
        s = batch.served
        layout = self._layouts.get(s.schema_sha256)
        if layout is None or len(batch) < BATCH_MIN_ROWS:
            return None
        return (batch.ids[0], batch.ids[-1], batch.ts, s.model, s.version, s.variant, str(s.role), s.schema_sha256,
                Status.OK.value, len(batch), batch.latency_ms, batch_payload.encode_columns(batch, layout))  # fmt: skip

    def _batch_insert(self) -> str:
        marker = "?" if self.is_sqlite else "%s"
        names = ", ".join(f'"{n}"' for n in tables.BATCH_COLUMNS)
        values = ", ".join([marker] * len(tables.BATCH_COLUMNS))
        # idempotent: a retried commit whose first attempt did commit (its answer lost) inserts nothing twice
        return f"INSERT INTO prediction_batches ({names}) VALUES ({values}) ON CONFLICT DO NOTHING"  # noqa: S608 - names are ours

    def _row_pieces(self, rows: Sequence[Prediction]) -> list[tuple[str, Any]]:
        """``rows`` as few multi-row INSERT statements.

        One statement per power-of-two piece of the batch (13 rows: 8 + 4 + 1), not one execution per
        row: the SQLite driver lets go of the GIL at every statement step, and under load each of those
        waits for the serving thread to hand it back (the GIL's switch interval), so a row per step made
        the writer the bottleneck. The statement texts are few (per slot layout and piece size), so the
        driver's statement cache keeps them. Rows are grouped by schema, each group binding only the slot
        columns its schema uses. A refused record's values may not fit its schema: its row keeps them as
        JSON only (schema "").
        """
        if not rows:
            return []
        dumps = orjson.dumps
        layouts = self._layouts
        ok = Status.OK
        groups: dict[str, tuple[tuple[str, ...], tuple[str, ...], list[tuple[Any, ...]]]] = {}
        # who answered, as its row's columns, once per Served of this call (a Served's hash is not cached)
        heads: dict[int, tuple[Served, tuple[str, str, str, str]]] = {}
        for p in rows:
            s, status = p.served, p.status
            sha = s.schema_sha256 if status is not Status.INVALID else ""
            group = groups.get(sha)
            if group is None:
                layout = layouts.get(sha)
                if layout is None:
                    group = groups[sha] = (_NO_SLOTS, _NO_SLOTS, [])
                else:
                    group = groups[sha] = (layout.columns, layout.names, [])
            head = heads.get(id(s))
            if head is None or head[0] is not s:
                head = heads[id(s)] = (s, (s.model, s.version, s.variant, s.role.value))
            f, label, proba = p.features, p.label, p.proba
            score: float | None
            if status is ok and proba is not None:  # an answered classifier's record: Prediction.outputs, inline
                outputs = dumps({"predicted_class": label, "probabilities": dict(zip(s.classes, proba, strict=True))})
                score = score_of(proba)
            else:
                outputs, score = dumps(p.outputs()), p.score
            if label is not None and label.__class__ is not str:
                label = str(label)
            group[2].append(
                (
                    p.id, p.ts, *head[1], p.key, sha, label, score, dumps(f).decode(), outputs.decode(),
                    p.latency_ms, status.value, *(map(f.get, group[1]) if group[1] else _NO_SLOTS),
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
            values = ", ".join([one] * n_rows)
            sql = f"INSERT INTO predictions ({quoted}) VALUES {values} ON CONFLICT DO NOTHING"  # noqa: S608 - names are ours
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
        with self._db.reading(f"cannot read predictions of {model!r}") as conn:
            shas = set(conn.execute(sa.select(p.c.schema_sha256).where(*where).distinct()).scalars())
            for _ in range(3):  # a schema first written between the two reads: read again with it
                catalog = self._read_catalog(conn, shas)
                slot_columns, with_json = _columns_for(catalog, shas)
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
        window = build_window(rows, slot_columns, catalog, with_json)
        return concat([window, batch_window(found)]) if found else window

    def stream_window(
        self,
        model: str,
        since: float,
        until: float,
        *,
        version: str | None = None,
        variant: str | None = None,
        role: str | None = "primary",
        status: str | None = "ok",
        rows_per_chunk: int = ROWS_PER_CHUNK,
    ) -> Iterator[FeatureWindow]:
        """The rows ``read_window`` reads, as windows of about ``rows_per_chunk`` rows each (a batch of
        ``prediction_batches`` is never split, so a chunk of batches may pass it by one batch), in no order
        across chunks: what counts the rows (``monitor drift --recompute``) holds one chunk at a time, whatever
        the window's size. Postgres sends them from a server-side cursor; SQLite's driver steps the query as
        rows are fetched. The connection stays open until the last chunk is taken (or the iterator is closed).

        Unlike ``read_window`` it does not first look for the window's schemas (a scan of the window of its own):
        it selects the slot columns of every schema in the catalog, and the ``features`` JSON only for the rows
        whose schema the catalog does not hold in slots (a schema registered while the window is read included).
        The next chunk is fetched while the caller works on this one (``_ahead``), through the driver's cursor
        (``_fetches``)."""
        p, b = tables.predictions, tables.prediction_batches
        wanted = {"model": model, "version": version, "variant": variant, "role": role, "status": status}
        what = f"cannot read predictions of {model!r}"
        where = _matching(p, since, until, **wanted)
        with self._db.errors(what):
            conn = self._db.engine.connect()
        try:
            with self._db.errors(what):
                catalog = self._read_catalog(conn, None)
            slot_columns, _ = _columns_for(catalog, set())
            slotted = sorted(sha for sha, layout in catalog.items() if not layout.unslotted)
            head = [p.c.ts, p.c.id, p.c.version, p.c.variant, p.c.label, p.c.score, p.c.schema_sha256]
            features = sa.case((p.c.schema_sha256.in_(slotted), sa.null()), else_=p.c.features)
            columns = [*head, *[p.c[c] for c in slot_columns], features]
            with self._db.errors(what):
                fetches = _fetches(conn, sa.select(*columns).where(*where), max(1, rows_per_chunk))
            parts = _ahead(fetches)
            try:
                while (part := _next(parts, self._db, what)) is not None:
                    yield build_window(part, slot_columns, catalog, with_json=True)
            finally:
                parts.close()  # waits for a fetch under way, before its cursor and connection are closed
                fetches.close()
            query = sa.select(b.c.n_rows, b.c.ts, b.c.version, b.c.variant, b.c.schema_sha256, b.c.payload)
            streaming = conn.execution_options(stream_results=True, yield_per=BATCHES_PER_FETCH)
            with self._db.errors(what):
                blobs = streaming.execute(query.where(*_matching(b, since, until, **wanted))).partitions()
            held: list[tuple[float, str, str, str, batch_payload.DecodedBatch]] = []
            count = 0
            while (fetched := _next(blobs, self._db, what)) is not None:
                for n_rows, ts, v, var, sha, blob in fetched:
                    held.append((ts, v, var, sha, batch_payload.decode(blob)))
                    count += n_rows
                    if count >= rows_per_chunk:
                        yield batch_window(held)
                        held, count = [], 0
            if held:
                yield batch_window(held)
        finally:
            with self._db.errors(what):
                conn.close()

    def read_latencies(
        self, model: str, since: float, until: float, *, variant: str | None = None, role: str = "primary"
    ) -> np.ndarray:
        """Latency (ms) of each answered request of ``model`` in ``[since, until)``: one value per request's chunk
        (its predictions share one time and one latency, whether logged as rows or as one row of columns), not one
        per prediction, so a batch is one request for the latency guardrail (its rows are not independent)."""
        p, b = tables.predictions, tables.prediction_batches
        wanted = {"model": model, "variant": variant, "role": role, "status": "ok"}
        with self._db.reading(f"cannot read latencies of {model!r}") as conn:
            query = sa.select(p.c.latency_ms).where(*_matching(p, since, until, **wanted))
            rows = conn.execute(query.group_by(p.c.ts, p.c.latency_ms)).scalars()
            single = np.fromiter(rows, dtype=np.float64)
            batches = conn.execute(sa.select(b.c.latency_ms).where(*_matching(b, since, until, **wanted))).scalars()
            batched = np.fromiter(batches, dtype=np.float64)
        return np.concatenate([single, batched]) if len(batched) else single

    def read_outcomes(
        self,
        model: str,
        since: float,
        until: float,
        *,
        version: str | None = None,
        variant: str | None = None,
        role: str = "primary",
    ) -> Outcomes:
        """The predictions (status ok) of ``model`` in ``[since, until)`` by ``role`` ("primary" or "shadow")
        without their features (what the feedback join needs, cheaper than ``read_window``)."""
        p, b = tables.predictions, tables.prediction_batches
        wanted = {"model": model, "version": version, "variant": variant, "role": role, "status": "ok"}
        where, b_where = _matching(p, since, until, **wanted), _matching(b, since, until, **wanted)
        ids: list[Any] = [np.array([], dtype=object)]
        ts: list[Any] = [np.array([], dtype=np.float64)]
        labels: list[Any] = [np.array([], dtype=object)]
        scores: list[Any] = [np.array([], dtype=np.float64)]
        routing_keys: list[Any] = [np.array([], dtype=object)]
        query = sa.select(p.c.id, p.c.ts, p.c.label, p.c.score, p.c.routing_key).where(*where)
        with self._db.reading(f"cannot read predictions of {model!r}") as conn:
            # a fetch at a time into columns: at millions of rows, holding them all as rows first took GBs
            for part in _fetches(conn, query, ROWS_PER_CHUNK):
                columns = list(zip(*part, strict=True))
                ids.append(np.array(columns[0], dtype=object))
                ts.append(np.array(columns[1], dtype=np.float64))
                labels.append(np.array(columns[2], dtype=object))
                scores.append(np.array(columns[3], dtype=np.float64))  # NULL (None) is NaN
                routing_keys.append(np.array(columns[4], dtype=object))
            blobs = conn.execute(sa.select(b.c.ts, b.c.payload).where(*b_where)).all()
        for batch_ts, blob in blobs:
            decoded = batch_payload.decode(blob)
            ids.append(np.array(decoded.ids, dtype=object))
            ts.append(np.full(len(decoded.ids), batch_ts, dtype=np.float64))
            labels.append(decoded.labels)
            scores.append(decoded.score)
            routing_keys.append(np.array(decoded.routing_keys, dtype=object))
        return Outcomes(
            np.concatenate(ids), np.concatenate(ts), np.concatenate(labels), np.concatenate(scores),
            np.concatenate(routing_keys),
        )  # fmt: skip

    def find_in_batches(self, conn: Connection, prediction_id: str) -> Prediction | None:
        """The prediction ``prediction_id`` if a batch holds it (see batches.py for the id range scan). On Postgres
        the id's day bounds ``ts`` too, so the lookup reads one daily partition (two near midnight)."""
        b = tables.prediction_batches
        columns = [b.c[n] for n in ("ts", "model", "version", "variant", "role", "schema_sha256", "latency_ms",
                                    "payload")]  # fmt: skip
        query = (
            sa.select(*columns)
            .where(b.c.first_id <= prediction_id, b.c.first_id >= batch_payload.id_floor(prediction_id))
            .where(b.c.last_id >= prediction_id)
            .order_by(b.c.first_id.desc())
        )
        bounded = None if self.is_sqlite else _by_id_time(query, b, prediction_id, batch_payload.ID_SPAN_MS / 1000)
        for attempt in (bounded, query) if bounded is not None else (query,):
            for ts, model, version, variant, role, sha, latency_ms, blob in conn.execute(attempt):
                decoded = batch_payload.decode(blob)
                try:
                    i = decoded.ids.index(prediction_id)
                except ValueError:
                    continue
                served = Served(model, version, variant, Role(role), sha, tuple(decoded.classes or ()))
                return decoded.prediction(i, served, ts, latency_ms)
        return None

    def find_row(self, conn: Connection, prediction_id: str, columns: Sequence[str] = ("id",)) -> Any:
        """The row of ``predictions`` with this id (``columns`` of it), or None; on Postgres by the id's day first
        (one index lookup in one partition), then, for an id whose row has another time, in every partition."""
        p = tables.predictions
        query = sa.select(*[p.c[n] for n in columns]).where(p.c.id == prediction_id)
        bounded = None if self.is_sqlite else _by_id_time(query, p, prediction_id)
        if bounded is not None:
            row = conn.execute(bounded).first()
            if row is not None:
                return row
        return conn.execute(query).first()

    def _read_catalog(self, conn: Connection, shas: set[str] | None) -> dict[str, SchemaSlots]:
        """The slot layouts of ``shas`` (None: of every schema) as stored (another process may have registered
        them)."""
        if shas is not None and not shas:
            return {}
        c = tables.feature_catalog
        found: dict[str, list[FeatureSlot]] = {}
        query = sa.select(c.c.schema_sha256, c.c.position, c.c.feature, c.c.kind, c.c.slot)
        if shas is not None:
            query = query.where(c.c.schema_sha256.in_(sorted(shas)))
        for sha, position, name, kind, slot in conn.execute(query):
            found.setdefault(sha, []).append(FeatureSlot(position, name, kind, slot))
        return {sha: SchemaSlots(sha, tuple(sorted(fs, key=lambda f: f.position))) for sha, fs in found.items()}

    def get(self, prediction_id: str) -> Prediction | None:
        """One logged prediction (any status), as it was logged; None if unknown."""
        with self._db.reading(f"cannot read the prediction {prediction_id[:64]!r}") as conn:
            row = self.find_row(conn, prediction_id, tables.BASE_COLUMNS)
            if row is None:
                return self.find_in_batches(conn, prediction_id)
        return _logged(dict(zip(tables.BASE_COLUMNS, row, strict=True)))

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
        with self._db.reading(f"cannot count the predictions of {model or 'every model'!r}") as conn:
            for table, how_many in (
                (tables.predictions, sa.func.count()),
                (tables.prediction_batches, sa.func.coalesce(sa.func.sum(tables.prediction_batches.c.n_rows), 0)),
            ):
                query = sa.select(how_many).select_from(table).where(*_matching(table, since, until, **wanted))
                total += int(conn.execute(query).scalar_one())
        return total


def _logged(row: dict[str, Any]) -> Prediction:
    """A row of ``predictions`` as the prediction it logged."""
    outputs: dict[str, Any] = orjson.loads(row["outputs"])
    probabilities: dict[str, float] | None = outputs.get("probabilities")
    classes = tuple(probabilities) if probabilities is not None else ()
    served = Served(row["model"], row["version"], row["variant"], Role(row["role"]), row["schema_sha256"], classes)
    errors = tuple(FieldError(**e) for e in outputs.get("errors", ()))
    return Prediction(
        row["id"], row["ts"], served, 0, orjson.loads(row["features"]), row["routing_key"], row["latency_ms"],
        Status(row["status"]), outputs.get("predicted_class"),
        list(probabilities.values()) if probabilities is not None else None, outputs.get("value"), errors,
        outputs.get("error"),
    )  # fmt: skip


def _matching(table: sa.Table, since: float | None, until: float | None, **wanted: str | None) -> list[Any]:
    """The conditions every read of rows shares: each named column equal to its value (None: any value), and
    ``since <= ts < until`` (None: open)."""
    where: list[Any] = [table.c[name] == value for name, value in wanted.items() if value is not None]
    if since is not None:
        where.append(table.c.ts >= since)
    if until is not None:
        where.append(table.c.ts < until)
    return where


def _by_id_time(query: Any, table: sa.Table, prediction_id: str, before_s: float = 0.0) -> Any:
    """``query`` narrowed to the rows whose ``ts`` is near the time in ``prediction_id`` (a UUIDv7 made with its
    row's ``ts``), so Postgres prunes to that day's partition; None for an id that is not a UUIDv7."""
    made = uuid7_seconds(prediction_id)
    if made is None:
        return None
    return query.where(table.c.ts >= made - before_s - ID_TIME_SLACK_S, table.c.ts < made + ID_TIME_SLACK_S)


def _columns_for(catalog: dict[str, SchemaSlots], shas: set[str]) -> tuple[list[str], bool]:
    """The slot columns a read of rows of ``shas`` selects, in order, and whether it needs the ``features`` JSON
    (a schema the catalog does not know, or features past the slots)."""
    slot_columns = sorted({c for s in catalog.values() for c in s.columns}, key=_slot_order)
    return slot_columns, any(s not in catalog or catalog[s].unslotted for s in shas)


def _fetches(conn: Connection, query: sa.Select[Any], size: int) -> Generator[Sequence[Any], None, None]:
    """The rows of ``query`` as the driver's tuples, ``size`` at a time: on Postgres from a server-side cursor in
    the binary format (psycopg's; it spares the server and the driver the text form of every number), on SQLite
    from a cursor the driver steps as rows are fetched. Through the driver's own cursor, not SQLAlchemy's result:
    at millions of rows, wrapping each row in a ``Row`` cost a fifth of the read."""
    compiled = query.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    statement = str(compiled)
    dbapi: Any = conn.connection.dbapi_connection  # the driver's connection (psycopg's or sqlite3's)
    driver_error: type[Exception] = conn.dialect.loaded_dbapi.Error
    try:
        if conn.dialect.name == "sqlite":
            cursor = dbapi.cursor()
            cursor.execute(statement, tuple(compiled.params[name] for name in compiled.positiontup or ()))
        else:
            cursor = dbapi.cursor(name=f"shipml_window_{id(query):x}", binary=True)
            cursor.execute(statement, compiled.params)
        try:
            while rows := cursor.fetchmany(size):
                yield rows
        finally:
            cursor.close()
    except driver_error as exc:  # as SQLAlchemy would have raised it, for Database.errors to translate
        raise sa.exc.DBAPIError.instance(statement, None, exc, driver_error, dialect=conn.dialect) from exc


def _ahead(fetches: Iterator[Sequence[Any]]) -> Generator[Sequence[Any], None, None]:
    """``fetches``, each fetched in a thread while the caller works on the one before: the database produces the
    next rows while this process counts the last (the driver lets go of the GIL while it waits). Closing it
    waits for a fetch under way."""
    with ThreadPoolExecutor(1, thread_name_prefix="shipml-fetch") as pool:
        pending = pool.submit(next, fetches, None)
        while (rows := pending.result()) is not None:
            pending = pool.submit(next, fetches, None)
            yield rows


def _next(parts: Iterator[Sequence[Any]], database: Database, what: str) -> Sequence[Any] | None:
    """The next fetch of a streamed result (None at its end), its database errors translated."""
    with database.errors(what):
        return next(parts, None)


def _slot_order(column: str) -> tuple[bool, int]:
    return column[0] != "n", int(column[1:])


Pieces = list[tuple[str, Any]]  # INSERT statements (the driver's SQL) and their parameters, run in order


def execute_pieces(database: Database, pieces: Sequence[tuple[str, Any]]) -> None:
    """Run ``pieces`` in one transaction of the row writer's engine, in the writers' turn; SQLite's lock held by
    another process is retried every ``LOCK_RETRY_S`` for up to ``LOCK_WAIT_S``. Errors are the driver's."""
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            with database.turn(), database.transaction(database.write_engine) as conn:
                for sql, params in pieces:
                    conn.exec_driver_sql(sql, params)
            return
        except sa.exc.OperationalError as exc:
            if not (database.is_sqlite and "locked" in str(exc.orig)) or time.monotonic() > deadline:
                raise
            time.sleep(LOCK_RETRY_S)


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
