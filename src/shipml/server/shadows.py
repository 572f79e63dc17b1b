"""Shadow variants off the response path: a bounded queue per shadow, drained in batches by one task.

A request only samples its records for each shadow and appends the copies to that shadow's queue
(microseconds, never awaited). One background task per shadow waits ``gather_s`` for copies to accumulate,
then scores up to ``batch_rows`` records of one loaded version at a time: one model call and a few log
writes of columns per batch instead of a call, a log row and a task per request. The scorer works in steps
of a fraction of a millisecond ``PACE_S`` apart (``PredictionService._score_shadow``), so a request in
flight meanwhile waits for one short step at most, never for a whole batch.

A full queue drops the new copies and counts them (``shipml_shadow_dropped_total``) rather than grow; so
does ``close`` for what is still queued when its time is up, so stopping the service never waits on a
shadow for longer than that.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable

from shipml.server.model_manager import Variant

# Copies a shadow may hold before new ones are dropped (per shadow and worker): seconds of traffic at a few
# thousand requests per second, and a few MB of records.
QUEUE_ROWS = 4096
# Records scored per batch: one model call, big enough that the native kernel lets the interpreter go
# (adapters/native.GIL_HELD_MAX_ROWS) and that the batch's rows share the trees' upper levels in the CPU's
# caches (a shadow's model is cold: the requests between two batches evict it).
BATCH_ROWS = 256
# Records validated, and logged as one PredictionBatch, per step of a batch.
SLICE_ROWS = 64
# The pause between two steps of a batch (and between two batches): a request meets one step, not a run of
# them. A batch then takes about ten paces, which bounds a worker's shadow to some 10,000 records a second;
# beyond, the queue fills and new copies are dropped (counted).
PACE_S = 0.002
# How long copies accumulate before a batch short of ``BATCH_ROWS`` is scored.
GATHER_S = 0.1
# After cancelling a batch that outlived close's time: how long to wait for it to unwind.
CANCEL_WAIT_S = 1.0

Copies = tuple[Variant, list[object], list[str | None]]
Score = Callable[[Variant, list[object], list[str | None]], Awaitable[None]]
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

    def put(self, variant: Variant, records: list[object], keys: list[str | None]) -> None:
        """Queue copies of ``records`` (with their routing keys) for ``variant``, or drop and count them when
        the queue has no room (copies bigger than the whole queue fit an empty one) or it is closed."""
        n = len(records)
        if not n:
            return
        if self._closing or (self._rows and self._rows + n > self.max_rows):
            self.drop(variant, n)
            return
        self._items.append((variant, records, keys))
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
        for variant, records, _ in self._items:
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
            variant, records, keys = self._take(self.batch_rows)
            self._in_flight = (variant, len(records))
            await self.score(variant, records, keys)
            self._in_flight = None
            await asyncio.sleep(PACE_S)  # the loop serves requests between two batches

    def _take(self, limit: int) -> Copies:
        """Up to ``limit`` queued records of one loaded version (a reload starts another batch), oldest first; a
        request's copies are split where the limit falls."""
        variant = self._items[0][0]
        records: list[object] = []
        keys: list[str | None] = []
        while self._items and self._items[0][0] is variant and len(records) < limit:
            _, more, more_keys = self._items.popleft()
            room = limit - len(records)
            if len(more) > room:
                self._items.appendleft((variant, more[room:], more_keys[room:]))
                more, more_keys = more[:room], more_keys[:room]
            records += more
            keys += more_keys
        self._rows -= len(records)
        return variant, records, keys


class Shadows:
    """The shadow queues of one prediction service, one per shadow variant (by name), made on first use."""

    def __init__(self, score: Score, drop: Drop, *, max_rows: int = QUEUE_ROWS) -> None:
        self.score = score
        self.drop = drop
        self.max_rows = max_rows
        self.queues: dict[str, ShadowQueue] = {}
        self._closed = False

    def put(self, variant: Variant, records: list[object], keys: list[str | None]) -> None:
        if self._closed:
            self.drop(variant, len(records))
            return
        queue = self.queues.get(variant.variant)
        if queue is None:
            queue = self.queues[variant.variant] = ShadowQueue(
                variant.variant, self.score, self.drop, max_rows=self.max_rows
            )
        queue.put(variant, records, keys)

    async def close(self, timeout_s: float) -> None:
        """Close every queue at once, within ``timeout_s`` in all (see ``ShadowQueue.close``)."""
        self._closed = True
        await asyncio.gather(*(q.close(timeout_s) for q in self.queues.values()))
