"""PredictionService: the one entry point every protocol goes through. It routes each record to a variant,
validates it against that variant's schema, predicts, logs and feeds the shadows, and answers with one
``core.prediction.Prediction`` per record, in order."""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from math import isfinite
from typing import Any

import anyio
import anyio.to_thread
import numpy as np
import structlog

from shipml.adapters.store import StoreFull, StoreWriter
from shipml.core.ids import Uuid7Generator
from shipml.core.prediction import Durability, Prediction, PredictionBatch, Record, Routed, Status
from shipml.core.predictor import Columns, Outputs
from shipml.core.records import Accepted, FieldError
from shipml.core.routing import shadow_sampled
from shipml.errors import StoreError
from shipml.server import shadows
from shipml.server.metrics import ServerMetrics
from shipml.server.model_manager import Deployment, Variant

log = structlog.get_logger("shipml.server")

# Batches are validated, predicted and logged this many records at a time (see PredictionService.answer).
CHUNK_ROWS = 2048

# From this many records, a chunk is validated and labelled a column at a time (numpy), not a record at a time.
VECTOR_MIN_ROWS = 64

# A record that passed validation: its position in the request, the record, its normalised values.
Checked = tuple[int, Record, dict[str, Any]]


class PredictionTimeout(TimeoutError):
    """The model did not answer within ``serve.request_timeout_s`` (a 504)."""


class Room:
    """Room reserved in the log writer's queue for one request, taken as its predictions are logged; what is
    left is given back once (``release``). Reserved whole before anything is logged, so a request is refused
    whole (StoreFull, a 503) or logged whole, never answered 503 after part of it was logged."""

    __slots__ = ("left", "writer")

    def __init__(self, writer: StoreWriter | None, n_rows: int) -> None:
        self.writer = writer
        self.left = 0
        if writer is not None:
            writer.reserve(n_rows)
            self.left = n_rows

    def take(self, n_rows: int) -> None:
        self.left -= n_rows

    def release(self) -> None:
        if self.writer is not None and self.left:
            self.writer.release(self.left)
        self.left = 0


class PredictionService:
    """Runs records through the deployment's variants and the prediction log."""

    def __init__(
        self,
        writer: StoreWriter | None,
        durability: Durability,
        metrics: ServerMetrics,
        timeout_s: float = 30.0,
        shadow_timeout_s: float = 2.0,
        *,
        shadow_queue_rows: int = shadows.QUEUE_ROWS,
        store_timeout_s: float = 5.0,
    ) -> None:
        """``store_timeout_s``: the longest a request waits for its commit (``commit`` durability) before it
        answers 503; its rows may still be committed after (the client retries with new ids)."""
        self.writer = writer
        self.store_timeout_s = store_timeout_s
        self._commits = CommitDeadlines(store_timeout_s)
        self.durability = Durability(durability)
        self.metrics = metrics
        self.timeout_s = timeout_s
        self.ids = Uuid7Generator()
        self.rng = random.Random()  # noqa: S311 - routing of requests without a key: uniform, not secret
        self.shadow_timeout_s = shadow_timeout_s
        # each shadow's sampled copies wait in a bounded queue, scored in batches off the response path
        self.shadows = shadows.Shadows(
            shadows.ShadowScorer(self, shadow_timeout_s), self._shadow_dropped, max_rows=shadow_queue_rows
        )

    def route(self, deployment: Deployment, key: str | None) -> tuple[Variant, Routed | None]:
        """The variant that answers a request routed as a whole by ``key`` (None: a random draw), and how it was
        routed (None without an experiment)."""
        variant, assignment = deployment.route(key, self.rng)
        if assignment is None:
            return variant, None
        return variant, Routed.KEY if assignment.keyed else Routed.RANDOM

    async def run(
        self, deployment: Deployment, records: Sequence[Record], *, variant: Variant | None = None
    ) -> list[Prediction]:
        """Each record's prediction, in order: routed by its key to a variant of ``deployment`` (or all answered
        by ``variant``, a request routed as a whole), validated, predicted and logged; then the shadows get
        their sampled copies, scored later off the response path. In ``commit`` durability the answer waits for
        the commit of every row of the request."""
        room = self._reserve(len(records))
        out: list[Prediction] = [None] * len(records)  # type: ignore[list-item]
        try:
            groups: list[tuple[Variant, Sequence[int]]]
            if variant is not None or deployment.split is None:
                groups = [(variant or deployment.primary, range(len(records)))]
            else:
                groups = self._split(deployment, records)
            for answering, positions in groups:
                mine = records if len(positions) == len(records) else [records[i] for i in positions]
                for p in await self.answer(answering, mine, positions, room, deployment.split is not None):
                    out[p.index] = p
        finally:
            room.release()  # the room of records the model never answered (a failed call)
        if deployment.shadows:
            self._shadow(deployment, records)
        return out

    async def run_columns(
        self,
        deployment: Deployment,
        features: list[Any],
        keys: list[str | None] | None,
        answer: Callable[[PredictionBatch], bytes],
    ) -> bytes | list[Prediction] | None:
        """A clean batch of a deployment without an experiment, end to end as columns: ``features`` (the records'
        feature objects as decoded; ``keys`` their routing keys, None when none has one) checked a column at a
        time, given to the primary's model as columns, logged as one unit of columns (one commit) and counted
        once: the batch's ``answer`` (built while its commit is under way, returned once it is done), or (the
        model answered NaN or an infinity) each record's prediction as ``run`` makes it. None when the batch is
        not for this path (too small, an experiment, a record that is not clean): then ``run`` answers it, a
        record at a time, with the same answers."""
        if deployment.split is not None or len(features) < VECTOR_MIN_ROWS:
            return None
        variant = deployment.primary
        columns = variant.validator.columns(features)
        if columns is None:
            return None
        n = len(features)
        room = self._reserve(n)
        started = time.perf_counter()
        try:
            try:
                outputs = await self.predict(variant, features, self.timeout_s, columns)
            except Exception as exc:
                accepted = self._accepted(features, keys)
                self.log(room, self.failed(variant, accepted, (time.perf_counter() - started) * 1000.0, exc))
                raise
            latency_ms = (time.perf_counter() - started) * 1000.0
            m = self.metrics
            batch = self.batch(variant, columns, keys, outputs, latency_ms)
            answered: bytes | list[Prediction]
            if batch is None:  # a NaN or an infinity: refused record by record, as run does
                answered = self.predictions(variant, self._accepted(features, keys), outputs, latency_ms)
                await self._committed(self.log(room, answered))
                self.count(variant, answered)
            else:
                waiting = self.log(room, batch)
                answered = answer(batch)  # meanwhile the writer commits
                await self._committed(waiting)
                m.child(m.predictions, variant.name, variant.version, variant.variant, Status.OK).inc(n)
            m.child(m.variant_latency, variant.name, variant.variant).observe(time.perf_counter() - started)
        finally:
            room.release()
        if deployment.shadows:
            self._shadow(deployment, [Record(f, k) for f, k in zip(features, keys or [None] * n, strict=True)])
        return answered

    @staticmethod
    def _accepted(features: list[Any], keys: list[str | None] | None) -> list[Checked]:
        """Clean records as ``validate`` accepts them (each its own values)."""
        keys = keys or [None] * len(features)
        return [(i, Record(f, k), f) for i, (f, k) in enumerate(zip(features, keys, strict=True))]

    def batch(
        self,
        variant: Variant,
        columns: dict[str, np.ndarray],
        keys: list[str | None] | None,
        outputs: Outputs,
        latency_ms: float,
    ) -> PredictionBatch | None:
        """The model's ``outputs`` for a clean batch's ``columns`` as a batch of answers (``predictions``'s, as
        columns), or None when an output is NaN or an infinity."""
        n = len(outputs.proba if outputs.proba is not None else outputs.values)  # type: ignore[arg-type]
        if outputs.proba is not None:
            if not np.isfinite(outputs.proba).all():
                return None
            classes = outputs.classes
            labels = [classes[j] for j in np.argmax(outputs.proba, axis=1).tolist()]
            return PredictionBatch(self.ids.strings(n), time.time(), variant.served, range(n), columns, keys,
                                   latency_ms, labels=labels, proba=outputs.proba)  # fmt: skip
        assert outputs.values is not None  # noqa: S101 - regression
        if not np.isfinite(outputs.values).all():
            return None
        return PredictionBatch(self.ids.strings(n), time.time(), variant.served, range(n), columns, keys, latency_ms,
                               values=outputs.values)  # fmt: skip

    def _split(self, deployment: Deployment, records: Sequence[Record]) -> list[tuple[Variant, Sequence[int]]]:
        """The variants that answer ``records`` (each routed by its key) and the positions each answers."""
        groups: dict[str, tuple[Variant, list[int]]] = {}
        for i, record in enumerate(records):
            variant, _ = deployment.route(record.key, self.rng)
            groups.setdefault(variant.variant, (variant, []))[1].append(i)
        return list(groups.values())

    async def answer(
        self, variant: Variant, records: Sequence[Record], positions: Sequence[int], room: Room, routed: bool = False
    ) -> list[Prediction]:
        """``records`` (at ``positions`` of their request) answered by ``variant`` (``routed``: by the split of an
        experiment). Big batches go through in chunks, each handed to the log writer as soon as it is predicted,
        so the writer commits one chunk while the next is validated and predicted. A model call that fails is
        logged (status error, so an experiment or a canary sees it in the variant's error rate) and raised."""
        started = time.perf_counter()
        out: list[Prediction] = []
        waits = []
        for lo in range(0, len(records), CHUNK_ROWS):
            hi = lo + CHUNK_ROWS
            chunk, where = records[lo:hi], positions[lo:hi]
            columns = self.clean_columns(variant, chunk)
            accepted: list[Checked]
            made: list[Prediction]
            if columns is not None:  # every record clean: each is its own values, the model gets the columns
                accepted, made = [(i, r, r.features) for i, r in zip(where, chunk, strict=True)], []
            else:
                accepted, made = self.validate(variant, chunk, where, routed)
            if accepted:
                try:
                    outputs = await self.predict(variant, [a[2] for a in accepted], self.timeout_s, columns)
                except Exception as exc:
                    made += self.failed(variant, accepted, (time.perf_counter() - started) * 1000.0, exc)
                    self.log(room, made)
                    raise
                latency_ms = (time.perf_counter() - started) * 1000.0
                made += self.predictions(variant, accepted, outputs, latency_ms, routed)
            waits.append(self.log(room, made))
            out += made
        for waiting in waits:
            await self._committed(waiting)
        self.count(variant, out)
        m = self.metrics
        m.child(m.variant_latency, variant.name, variant.variant).observe(time.perf_counter() - started)
        return out

    def clean_columns(self, variant: Variant, records: Sequence[Record]) -> dict[str, np.ndarray] | None:
        """The columns of ``records`` when there are enough of them to check a column at a time and every one
        passes ``variant``'s schema as it is (``RecordValidator.columns``), else None (``validate`` them)."""
        if len(records) < VECTOR_MIN_ROWS:
            return None
        return variant.validator.columns([r.features for r in records])

    def validate(
        self,
        variant: Variant,
        records: Sequence[Record],
        positions: Sequence[int],
        routed: bool = False,
    ) -> tuple[list[Checked], list[Prediction]]:
        """The records that pass ``variant``'s schema, and a prediction (status invalid) for each refused one.
        A refused record may not fit the schema, so its row keeps the record as received (never in typed slots)."""
        validator = variant.validator
        if len(records) >= VECTOR_MIN_ROWS and validator.all_clean([r.features for r in records]):
            return [(i, r, r.features) for i, r in zip(positions, records, strict=True)], []
        accepted: list[Checked] = []
        refused: list[tuple[int, int, list[FieldError]]] = []
        for k, (i, record) in enumerate(zip(positions, records, strict=True)):
            checked = validator.check(record.features, i)
            if isinstance(checked, Accepted):
                accepted.append((i, record, checked.values))
                for feature, rule in checked.tolerated:
                    self.metrics.tolerated.labels(variant.name, feature, rule).inc()
            else:
                refused.append((k, i, checked))
        if not refused:
            return accepted, []
        now, ids, served = time.time(), self.ids.strings(len(refused)), variant.served
        made = []
        for n, (k, i, errors) in enumerate(refused):
            record = records[k]
            features = record.features if isinstance(record.features, dict) else {"_record": record.features}
            made.append(
                Prediction(ids[n], now, served, i, features, record.key, 0.0, Status.INVALID, errors=tuple(errors),
                           routed=_how(record, routed))
            )  # fmt: skip
        return accepted, made

    async def predict(
        self, variant: Variant, rows: list[dict[str, Any]], timeout_s: float, columns: Columns | None = None
    ) -> Outputs:
        """The model's outputs for validated ``rows``: inline for a fast predictor's small call, else through the
        variant's micro-batcher or in a worker thread, abandoned after ``timeout_s`` (PredictionTimeout).
        ``columns``: the same rows as columns (``clean_columns``), given to ``predict_columns`` (bit for bit
        ``predict``'s outputs, without a frame or matrix built a row at a time)."""
        predictor, batcher = variant.bundle.predictor, variant.batcher
        if batcher is None and len(rows) <= predictor.inline_max_rows:
            if columns is not None:
                return predictor.predict_columns(columns)
            return predictor.predict(rows)  # a fast predictor: ~0.01 ms, cheaper than a hop to a worker thread
        try:
            with anyio.fail_after(timeout_s):
                if batcher is not None and len(rows) < batcher.max_batch_size:
                    return await batcher.predict(rows)  # grouped with concurrent requests, one call
                # a call that hangs is abandoned (its thread finishes on its own), not waited for
                if columns is not None:
                    call = functools.partial(predictor.predict_columns, columns)
                    return await anyio.to_thread.run_sync(call, abandon_on_cancel=True)
                return await anyio.to_thread.run_sync(predictor.predict, rows, abandon_on_cancel=True)
        except TimeoutError:
            raise PredictionTimeout(f"the model did not answer within {timeout_s:g} s") from None

    def predictions(
        self,
        variant: Variant,
        accepted: list[Checked],
        outputs: Outputs,
        latency_ms: float,
        routed: bool = False,
    ) -> list[Prediction]:
        """The model's ``outputs`` for the ``accepted`` records as predictions: status ok, or output_invalid
        (refused with its own code, counted) where the model answered NaN or an infinity."""
        now, served, ids = time.time(), variant.served, self.ids.strings(len(accepted))
        out: list[Prediction] = []
        if outputs.proba is not None:
            classes = outputs.classes
            rows = outputs.proba.tolist()  # Python lists, not numpy scalars, per row
            if len(rows) >= VECTOR_MIN_ROWS and np.isfinite(outputs.proba).all():
                # the first most probable class, as argmax's, without a check per row
                labels = [classes[j] for j in np.argmax(outputs.proba, axis=1).tolist()]
                if not routed:  # outside an experiment: one comprehension, no question per record
                    ok = Status.OK
                    return [Prediction(pid, now, served, i, values, record.key, latency_ms, ok, label, p)
                            for pid, (i, record, values), label, p in zip(ids, accepted, labels, rows, strict=True)]  # fmt: skip
                for k, ((i, record, values), p) in enumerate(zip(accepted, rows, strict=True)):
                    how = _how(record, routed)
                    out.append(Prediction(ids[k], now, served, i, values, record.key, latency_ms, Status.OK,
                                          labels[k], p, routed=how))  # fmt: skip
                return out
            for k, ((i, record, values), p) in enumerate(zip(accepted, rows, strict=True)):
                how = _how(record, routed)
                if isfinite(sum(p)):  # NaN or an infinity anywhere in the row (cheaper than numpy per row)
                    out.append(Prediction(ids[k], now, served, i, values, record.key, latency_ms, Status.OK,
                                          classes[p.index(max(p))], p, routed=how))  # fmt: skip
                else:
                    out.append(self._output_invalid(variant, ids[k], now, i, record, values, latency_ms, how))
            return out
        assert outputs.values is not None  # noqa: S101 - regression
        for k, ((i, record, values), value) in enumerate(zip(accepted, outputs.values.tolist(), strict=True)):
            how = _how(record, routed)
            if isfinite(value):
                out.append(Prediction(ids[k], now, served, i, values, record.key, latency_ms, Status.OK,
                                      value=value, routed=how))  # fmt: skip
            else:
                out.append(self._output_invalid(variant, ids[k], now, i, record, values, latency_ms, how))
        return out

    def _output_invalid(
        self,
        variant: Variant,
        prediction_id: str,
        now: float,
        i: int,
        record: Record,
        values: dict[str, Any],
        latency_ms: float,
        routed: Routed | None,
    ) -> Prediction:
        m = self.metrics
        m.child(m.output_invalid, variant.name, variant.version, variant.variant).inc()
        error = FieldError(i, "", "model_output_invalid", "the model's output for this record is not a finite number")
        return Prediction(prediction_id, now, variant.served, i, values, record.key, latency_ms, Status.OUTPUT_INVALID,
                          errors=(error,), routed=routed)  # fmt: skip

    def failed(
        self, variant: Variant, accepted: list[Checked], latency_ms: float, exc: BaseException
    ) -> list[Prediction]:
        """Predictions (status error) of records whose model call raised or timed out, counted per variant."""
        m = self.metrics
        m.child(m.predictions, variant.name, variant.version, variant.variant, Status.ERROR).inc(len(accepted))
        now, ids, served = time.time(), self.ids.strings(len(accepted)), variant.served
        why = "timeout" if isinstance(exc, PredictionTimeout) else "model_error"
        return [
            Prediction(ids[k], now, served, i, values, record.key, latency_ms, Status.ERROR, failure=why)
            for k, (i, record, values) in enumerate(accepted)
        ]

    def count(self, variant: Variant, made: Sequence[Prediction]) -> None:
        """The predictions counter, per status (status error is counted where the call failed)."""
        m, name, version, v = self.metrics, variant.name, variant.version, variant.variant
        if all(p.status is Status.OK for p in made):  # the usual case, in one pass and one increment
            if made:
                m.child(m.predictions, name, version, v, Status.OK).inc(len(made))
            return
        for status, n in Counter(p.status for p in made if p.status is not Status.ERROR).items():
            m.child(m.predictions, name, version, v, status).inc(n)

    def log(
        self, room: Room, made: list[Prediction] | PredictionBatch, *, durability: Durability | None = None
    ) -> asyncio.Future[None] | None:
        """Hand predictions to the writer, in the room reserved for them: the future of their commit (``commit``
        durability) or None."""
        if self.writer is None or not made:
            return None
        room.take(len(made))
        if (durability or self.durability) is not Durability.COMMIT:
            self.writer.enqueue(made, reserved=True)
            return None
        return self.writer.submit_waitable(made, reserved=True)

    def room(self, n_rows: int) -> Room:
        """Room for ``n_rows`` predictions in the log's queue, reserved at once (StoreFull when there is none)."""
        return Room(self.writer, n_rows)

    def _reserve(self, n_rows: int) -> Room:
        try:
            return self.room(n_rows)
        except StoreFull:
            self.metrics.shed.inc()
            raise

    async def _committed(self, waiting: asyncio.Future[None] | None) -> None:
        """Wait for a commit, at most ``store_timeout_s``; a failed or late one raises StoreError (a 503: the
        prediction was not logged, or not yet)."""
        if waiting is None:
            return
        self._commits.watch(waiting)
        await waiting

    def _shadow(self, deployment: Deployment, records: Sequence[Record]) -> None:
        """Queue each shadow's sampled copies of the request (never awaited: see server/shadows.py)."""
        for variant, shadow in deployment.shadows:
            if shadow.fraction >= 1.0:  # every record (as shadow_sampled says, without a hash per key)
                self.shadows.put(variant, list(records))
                continue
            picked = [r for r in records if shadow_sampled(r.key, shadow, deployment.salt, self.rng)]
            if picked:
                self.shadows.put(variant, picked)

    def _shadow_dropped(self, variant: Variant, n_records: int) -> None:
        self.metrics.child(self.metrics.shadow_dropped, variant.name, variant.variant).inc(n_records)

    async def close(self) -> None:
        """Stop the shadows: their queued copies are scored within ``serve.shadow_timeout_s``, the rest dropped
        (counted). Call before the log's writer closes."""
        await self.shadows.close(self.shadow_timeout_s)


class CommitDeadlines:
    """The commits requests wait for, failed with StoreError once ``timeout_s`` has passed (the writer skips a
    future that is already done; the rows may still be committed after, and the client retries with new ids).

    One timer for all of them instead of ``asyncio.timeout`` around each wait (a Timeout, a timer made and
    cancelled: 3.4 us of every committed request, measured): the waits are kept in the order they began, so
    their deadlines are in order too, and the timer is set for the oldest wait still pending. A request that
    goes away (its wait cancelled) leaves a done future, dropped when the timer passes it."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._waits: deque[tuple[float, asyncio.Future[None]]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def watch(self, waiting: asyncio.Future[None]) -> None:
        loop = waiting.get_loop()
        if loop is not self._loop:  # another event loop (tests run several): the old one's waits are gone
            self._loop, self._timer = loop, None
            self._waits.clear()
        deadline = loop.time() + self.timeout_s
        self._waits.append((deadline, waiting))
        if self._timer is None:
            self._timer = loop.call_at(deadline, self._expire)

    def _expire(self) -> None:
        assert self._loop is not None  # noqa: S101 - set by watch before the timer
        now, waits = self._loop.time(), self._waits
        while waits and (waits[0][1].done() or waits[0][0] <= now):
            _, waiting = waits.popleft()
            if not waiting.done():
                waiting.set_exception(
                    StoreError(f"the prediction store did not commit within store.timeout_s ({self.timeout_s:g} s)")
                )
        self._timer = self._loop.call_at(waits[0][0], self._expire) if waits else None


def _how(record: Record, routed: bool) -> Routed | None:
    """How a record of an experiment (``routed``) found its variant: by its key when it has one, else by a
    random draw; None without an experiment."""
    if not routed:
        return None
    return Routed.RANDOM if record.key is None else Routed.KEY
