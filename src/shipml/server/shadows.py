"""Shadow variants off the response path: a bounded queue per shadow, drained in batches by one task.

A request only samples its records for each shadow and appends the copies to that shadow's queue
(microseconds, never awaited). One background task per shadow waits ``gather_s`` after a copy arrives in
an empty queue, then scores what is queued, up to ``batch_rows`` records of one loaded version at a time:
one validation, one model call and one log write per batch, and the event loop serves requests between two
batches. Per-request tasks did the same work a record at a time, each competing with the requests on the
loop (``make bench``: +2 ms of p99 at fraction 1.0).

A full queue drops the new copies and counts them (``shipml_shadow_dropped_total``) rather than grow; so
does ``close`` for what is still queued when its time is up, so stopping the service never waits on a
shadow for longer than that.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable

from shipml.server.model_manager import Variant

# Copies a shadow may hold before new ones are dropped (per shadow and worker): at a few thousand requests
# per second a batch takes a few hundred, so this is seconds of a stalled shadow, and a few MB of records.
QUEUE_ROWS = 4096
# Records scored per batch: one model call and one log row of columns (the store's PredictionBatch).
BATCH_ROWS = 256
# How long the first copy into an empty queue waits for others to join its batch.
GATHER_S = 0.02
# After cancelling a batch that outlived close's time: how long to wait for it to unwind.
CANCEL_WAIT_S = 1.0

Copies = tuple[Variant, list[object], list[str | None]]
Score = Callable[[Variant, list[object], list[str | None]], Awaitable[None]]
Drop = Callable[[Variant, int], None]


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
                if not self._closing:
                    await asyncio.sleep(self.gather_s)  # the copies of the requests meanwhile join this batch
                continue
            variant, records, keys = self._take()
            self._in_flight = (variant, len(records))
            await self.score(variant, records, keys)
            self._in_flight = None
            await asyncio.sleep(0)  # the loop serves requests between two batches

    def _take(self) -> Copies:
        """The next batch: queued copies of one loaded version (a reload starts another batch), whole, up to
        ``batch_rows`` records; copies bigger than a batch go a batch at a time."""
        variant, records, keys = self._items.popleft()
        if len(records) > self.batch_rows:
            rest = (variant, records[self.batch_rows :], keys[self.batch_rows :])
            self._items.appendleft(rest)
            records, keys = records[: self.batch_rows], keys[: self.batch_rows]
        else:
            records, keys = list(records), list(keys)
            while self._items and self._items[0][0] is variant:
                more, more_keys = self._items[0][1], self._items[0][2]
                if len(records) + len(more) > self.batch_rows:
                    break
                self._items.popleft()
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
