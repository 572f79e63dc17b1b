"""Shadow variants off the response path: a bounded queue per shadow, drained in batches by one task.

A request only samples its records for each shadow and appends the copies to that shadow's queue
(microseconds, never awaited). One background task per shadow waits ``gather_s`` for copies to accumulate,
then scores up to ``batch_rows`` records of one loaded version at a time: one model call and a few log
writes of columns per batch instead of a call, a log row and a task per request. The scorer works in steps
of a fraction of a millisecond ``PACE_S`` apart (``ShadowScorer``), so a request in flight meanwhile waits
for one short step at most, never for a whole batch.

A full queue drops the new copies and counts them (``shipml_shadow_dropped_total``) rather than grow; so
does ``close`` for what is still queued when its time is up, so stopping the service never waits on a
shadow for longer than that.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import structlog

from shipml.core.prediction import Durability, Prediction, Record, Status
from shipml.core.predictor import Outputs
from shipml.errors import StoreFull
from shipml.server.model_manager import Variant

if TYPE_CHECKING:
    from shipml.server.predictions import PredictionService, Room

log = structlog.get_logger("shipml.server")

# Copies a shadow may hold before new ones are dropped (per shadow and worker): seconds of traffic at a few
# thousand requests per second, and a few MB of records.
QUEUE_ROWS = 4096
# Records scored per batch: one model call, big enough that the native kernel lets the interpreter go
# (adapters/native.GIL_HELD_MAX_ROWS) and that the batch's rows share the trees' upper levels in the CPU's
# caches (a shadow's model is cold: the requests between two batches evict it).
BATCH_ROWS = 256
# Records validated, and made into predictions and logged as one unit (one row of columns in the store), per step
# of a batch (64 records: 0.1 to 0.3 ms of the event loop a step, measured).
SLICE_ROWS = 64
# The pause between two steps of a batch (and between two batches): a request meets one step, not a run of
# them. A batch then takes about ten paces, which bounds a worker's shadow to some 10,000 records a second;
# beyond, the queue fills and new copies are dropped (counted).
PACE_S = 0.002
# How long copies accumulate before a batch short of ``BATCH_ROWS`` is scored.
GATHER_S = 0.1
# After cancelling a batch that outlived close's time: how long to wait for it to unwind.
CANCEL_WAIT_S = 1.0

Copies = tuple[Variant, list[Record]]
Score = Callable[[Variant, list[Record]], Awaitable[None]]
Drop = Callable[[Variant, int], None]


class Steps:
    """A batch's steps, ``PACE_S`` apart: the pauses between them, and the time the batch worked without them."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.paused = 0.0

    async def pause(self) -> None:
        at = time.perf_counter()
        await asyncio.sleep(PACE_S)
        self.paused += time.perf_counter() - at

    def busy_s(self) -> float:
        return time.perf_counter() - self.started - self.paused


class ShadowQueue:
    """One shadow variant's copies waiting to be scored, and the task that scores them in batches. The task
    starts with the first copy, on the loop of that call (a new loop, as in tests, gets a new task)."""

    def __init__(
        self,
        name: str,
        score: Score,
        drop: Drop,
        *,
        max_rows: int = QUEUE_ROWS,
        batch_rows: int = BATCH_ROWS,
        gather_s: float = GATHER_S,
    ) -> None:
        self.name = name
        self.score = score  # scores one batch; must count and log its own failures (never raise)
        self.drop = drop  # counts copies never scored
        self.max_rows = max_rows
        self.batch_rows = batch_rows
        self.gather_s = gather_s
        self._items: collections.deque[Copies] = collections.deque()
        self._rows = 0
        self._in_flight: tuple[Variant, int] | None = None  # the batch being scored
        self._closing = False
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def queued(self) -> int:
        """Copies waiting, not counting the batch being scored."""
        return self._rows

    def put(self, variant: Variant, records: list[Record]) -> None:
        """Queue copies of ``records`` for ``variant``, or drop and count them when
        the queue has no room (copies bigger than the whole queue fit an empty one) or it is closed."""
        n = len(records)
        if not n:
            return
        if self._closing or (self._rows and self._rows + n > self.max_rows):
            self.drop(variant, n)
            return
        self._items.append((variant, records))
        self._rows += n
        task = self._task
        if task is None or task.done() or task.get_loop() is not asyncio.get_running_loop():
            self._ready = asyncio.Event()
            self._task = asyncio.create_task(self._drain(), name=f"shipml-shadow-{self.name}")
        self._ready.set()

    async def close(self, timeout_s: float) -> None:
        """Score what is queued for up to ``timeout_s``, then stop; what is still queued or being scored then is
        dropped and counted. New copies are dropped from the start of the call."""
        self._closing = True
        task = self._task
        if task is not None and not task.done() and task.get_loop() is asyncio.get_running_loop():
            self._ready.set()
            done, _ = await asyncio.wait({task}, timeout=timeout_s)
            if not done:
                task.cancel()
                await asyncio.wait({task}, timeout=CANCEL_WAIT_S)
                if self._in_flight is not None:
                    self.drop(*self._in_flight)
                    self._in_flight = None
        for variant, records in self._items:
            self.drop(variant, len(records))
        self._items.clear()
        self._rows = 0

    async def _drain(self) -> None:
        while self._items or not self._closing:
            if not self._items:
                self._ready.clear()
                await self._ready.wait()
                continue
            if self._rows < self.batch_rows and not self._closing:
                await asyncio.sleep(self.gather_s)  # the copies of the requests meanwhile join this batch
            variant, records = self._take(self.batch_rows)
            self._in_flight = (variant, len(records))
            await self.score(variant, records)
            self._in_flight = None
            await asyncio.sleep(PACE_S)  # the loop serves requests between two batches

    def _take(self, limit: int) -> Copies:
        """Up to ``limit`` queued records of one loaded version (a reload starts another batch), oldest first; a
        request's copies are split where the limit falls."""
        variant = self._items[0][0]
        records: list[Record] = []
        while self._items and self._items[0][0] is variant and len(records) < limit:
            _, more = self._items.popleft()
            room = limit - len(records)
            if len(more) > room:
                self._items.appendleft((variant, more[room:]))
                more = more[:room]
            records += more
        self._rows -= len(records)
        return variant, records


class ShadowScorer:
    """Scores a batch of a shadow's copies as the service answers a request (validated against the shadow's
    schema, predicted, logged as predictions with role shadow and the records' routing keys; refused records,
    NaN outputs and a failed or timed-out call logged and counted with their status), never answering anyone,
    with three differences. The work goes in steps ``PACE_S`` apart, so a request in flight meanwhile waits for
    one step at most; the predictions' latency is the batch's work, without those pauses. The model call is
    abandoned after ``serve.shadow_timeout_s``. The rows are logged in ``async`` durability whatever the
    service's: nobody waits for a shadow's commit. A log without room for the whole batch drops it (counted)
    rather than take the room of clients' predictions; any other failure is counted and logged."""

    def __init__(self, service: PredictionService, timeout_s: float) -> None:
        self.service = service
        self.timeout_s = timeout_s

    async def __call__(self, variant: Variant, records: list[Record]) -> None:
        s = self.service
        try:
            await self._score(variant, records)
        except StoreFull:
            s.metrics.child(s.metrics.shadow_dropped, variant.name, variant.variant).inc(len(records))
        except Exception as exc:  # noqa: BLE001 - a shadow must never fail a request, whatever goes wrong
            s.metrics.child(s.metrics.shadow_failures, variant.name, variant.version, variant.variant).inc()
            log.warning("shadow_failed", variant=variant.variant, records=len(records), error=type(exc).__name__)

    async def _score(self, variant: Variant, records: list[Record]) -> None:
        s, steps = self.service, Steps()
        made: list[Prediction] = []
        room = s.room(len(records))
        try:
            if await self._score_columns(variant, records, room, steps):
                return
            accepted = []
            for lo in range(0, len(records), SLICE_ROWS):
                hi = min(lo + SLICE_ROWS, len(records))
                checked, refused = s.validate(variant, records[lo:hi], range(lo, hi))
                accepted += checked
                made += refused
                await steps.pause()
            s.log(room, made, durability=Durability.ASYNC)
            if accepted:
                try:
                    outputs = await s.predict(variant, [a[2] for a in accepted], self.timeout_s)
                except Exception as exc:
                    s.log(room, s.failed(variant, accepted, steps.busy_s() * 1000.0, exc), durability=Durability.ASYNC)
                    raise
                latency_ms = steps.busy_s() * 1000.0
                for lo in range(0, len(accepted), SLICE_ROWS):  # made and logged a slice a step (0.4 ms at once)
                    await steps.pause()
                    answered = s.predictions(variant, accepted[lo : lo + SLICE_ROWS], _rows(outputs, lo), latency_ms)
                    s.log(room, answered, durability=Durability.ASYNC)
                    made += answered
        finally:
            room.release()
        s.count(variant, made)
        s.metrics.child(s.metrics.variant_latency, variant.name, variant.variant).observe(steps.busy_s())

    async def _score_columns(self, variant: Variant, records: list[Record], room: Room, steps: Steps) -> bool:
        """A batch whose every copy is clean, as a clean /predict/batch is answered: checked a column at a time,
        predicted on the columns and logged as one unit of columns, in two steps (no ``Prediction`` per record;
        a NaN or an infinity among the outputs: each record's prediction, as ``_score`` makes them). False,
        having done nothing, when a copy is not clean: the batch then goes a slice at a time."""
        if len(records) < SLICE_ROWS:  # a column at a time pays from about a slice's worth
            return False
        features = [r.features for r in records]
        columns = variant.validator.columns(features)
        if columns is None:
            return False
        await steps.pause()
        s = self.service
        try:
            outputs = await s.predict(variant, features, self.timeout_s, columns)
        except Exception as exc:
            accepted = [(i, r, r.features) for i, r in enumerate(records)]
            s.log(room, s.failed(variant, accepted, steps.busy_s() * 1000.0, exc), durability=Durability.ASYNC)
            raise
        keys = [r.key for r in records]
        latency_ms = steps.busy_s() * 1000.0
        batch = s.batch(variant, columns, keys if any(k is not None for k in keys) else None, outputs, latency_ms)
        m = s.metrics
        if batch is None:
            accepted = [(i, r, r.features) for i, r in enumerate(records)]
            made = s.predictions(variant, accepted, outputs, latency_ms)
            s.log(room, made, durability=Durability.ASYNC)
            s.count(variant, made)
        else:
            s.log(room, batch, durability=Durability.ASYNC)
            m.child(m.predictions, variant.name, variant.version, variant.variant, Status.OK).inc(len(batch))
        m.child(m.variant_latency, variant.name, variant.variant).observe(steps.busy_s())
        return True


def _rows(outputs: Outputs, lo: int) -> Outputs:
    """The outputs of rows ``lo`` to ``lo + SLICE_ROWS``."""
    hi = lo + SLICE_ROWS
    proba = None if outputs.proba is None else outputs.proba[lo:hi]
    values = None if outputs.values is None else outputs.values[lo:hi]
    return Outputs(outputs.classes, proba, values)


class Shadows:
    """The shadow queues of one prediction service, one per shadow variant (by name), made on first use."""

    def __init__(self, score: Score, drop: Drop, *, max_rows: int = QUEUE_ROWS) -> None:
        self.score = score
        self.drop = drop
        self.max_rows = max_rows
        self.queues: dict[str, ShadowQueue] = {}
        self._closed = False

    def put(self, variant: Variant, records: list[Record]) -> None:
        if self._closed:
            self.drop(variant, len(records))
            return
        queue = self.queues.get(variant.variant)
        if queue is None:
            queue = self.queues[variant.variant] = ShadowQueue(
                variant.variant, self.score, self.drop, max_rows=self.max_rows
            )
        queue.put(variant, records)

    async def close(self, timeout_s: float) -> None:
        """Close every queue at once, within ``timeout_s`` in all (see ``ShadowQueue.close``)."""
        self._closed = True
        await asyncio.gather(*(q.close(timeout_s) for q in self.queues.values()))
