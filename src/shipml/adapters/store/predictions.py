"""The predictions part of the store: the row writer's path (``write``) and every read of logged rows.

Rows are written by ``StoreWriter`` (writer.py) through ``write``: multi-row INSERTs into ``predictions``
and one row of ``prediction_batches`` per batch chunk. Reads (``read_window``, ``read_outcomes``,
``read_latencies``, ``get``, ``count``) see both tables alike. ``register_schema`` records a schema's slot
layout in the catalog (rows, no DDL), so its features go to typed columns.

Past ~400 lines because the write path (``write``, ``_row_pieces``, ``_as_rows``) still builds rows from the
answer's dict; it becomes the storage encoding of a typed ``Prediction`` next, and shorter.
"""

from __future__ import annotations

import itertools
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, overload

import numpy as np
import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from shipml.adapters.store import batches as batch_payload
from shipml.adapters.store import tables
from shipml.adapters.store.batches import PredictionBatch
from shipml.adapters.store.catalog import FeatureSlot, SchemaSlots, slots_for
from shipml.adapters.store.engine import Database
from shipml.adapters.store.window import FeatureWindow, batch_window, build_window, concat
from shipml.core.schema import FeatureSchema
from shipml.errors import StoreError

LOCK_WAIT_S = 30.0  # give up on a locked SQLite file after this long
LOCK_RETRY_S = 0.0005
MAX_ROWS_PER_STATEMENT = 512

_NO_SLOTS: tuple[str, ...] = ()


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


class Predictions:
    """Tables ``predictions``, ``prediction_batches`` and ``feature_catalog``."""

    def __init__(self, database: Database) -> None:
        self._db = database
        # the write path's names for what the database holds (kept as the writer's code reads them)
        self.write_engine, self.is_sqlite = database.write_engine, database.is_sqlite
        self._turn = database.turn
        self._layouts: dict[str, SchemaSlots] = {}  # schema_sha256 -> its slots, for the writer
        self._insert_sql: dict[tuple[str, ...], dict[int, str]] = {}  # slot columns -> n_rows -> INSERT

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
        with self._db.reading(f"cannot read predictions of {model!r}") as conn:
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
        window = build_window(rows, slot_columns, catalog, with_json)
        return concat([window, batch_window(found)]) if found else window

    def read_latencies(
        self, model: str, since: float, until: float, *, variant: str | None = None, role: str = "primary"
    ) -> np.ndarray:
        """Latency (ms) of each answered (status ok) prediction of ``model`` in ``[since, until)``; a batch's
        predictions share their batch's latency."""
        p, b = tables.predictions, tables.prediction_batches
        wanted = {"model": model, "variant": variant, "role": role, "status": "ok"}
        with self._db.reading(f"cannot read latencies of {model!r}") as conn:
            rows = conn.execute(sa.select(p.c.latency_ms).where(*_matching(p, since, until, **wanted))).scalars()
            single = np.fromiter(rows, dtype=np.float64)
            batches = conn.execute(
                sa.select(b.c.latency_ms, b.c.n_rows).where(*_matching(b, since, until, **wanted))
            ).all()
        if not batches:
            return single
        latency = np.array([r[0] for r in batches], dtype=np.float64)
        return np.concatenate([single, np.repeat(latency, np.array([r[1] for r in batches], dtype=np.int64))])

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
        with self._db.reading(f"cannot read predictions of {model!r}") as conn:
            rows = conn.execute(sa.select(p.c.id, p.c.ts, p.c.label, p.c.score, p.c.routing_key).where(*where)).all()
            blobs = conn.execute(sa.select(b.c.ts, b.c.payload).where(*b_where)).all()
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

    def find_in_batches(self, conn: Connection, prediction_id: str) -> dict[str, Any] | None:
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

    def get(self, prediction_id: str) -> dict[str, Any] | None:
        """One logged row (any status): the base columns, ``status`` among them, with ``features`` and
        ``outputs`` decoded; None if unknown."""
        p = tables.predictions
        with self._db.reading(f"cannot read the prediction {prediction_id!r}") as conn:
            row = conn.execute(sa.select(*[p.c[n] for n in tables.BASE_COLUMNS]).where(p.c.id == prediction_id)).first()
            if row is None:
                return self.find_in_batches(conn, prediction_id)
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
        with self._db.reading(f"cannot count the predictions of {model or 'every model'!r}") as conn:
            for table, how_many in (
                (tables.predictions, sa.func.count()),
                (tables.prediction_batches, sa.func.coalesce(sa.func.sum(tables.prediction_batches.c.n_rows), 0)),
            ):
                query = sa.select(how_many).select_from(table).where(*_matching(table, since, until, **wanted))
                total += int(conn.execute(query).scalar_one())
        return total


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
