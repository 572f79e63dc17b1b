"""StoreWriter: the single writer thread of the prediction log (group commit, bounded queue, load shedding)."""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import threading
import time
from collections.abc import Sequence
from typing import Any

from shipml.adapters.store.prediction_store import PredictionStore
from shipml.core.prediction import Prediction, PredictionBatch
from shipml.errors import StoreError, StoreFull

_STOP = object()
RETRY_FIRST_S = 0.1  # the first pause before an async commit is retried; it doubles up to RETRY_MAX_S
RETRY_MAX_S = 1.0

Waiter = tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | concurrent.futures.Future[None]
# What one put queues: the predictions of one request's chunk of one variant (the store chooses their encoding), or
# a clean batch's as columns.
Unit = list[Prediction] | PredictionBatch


class StoreWriter:
    """The single writer: takes rows from a bounded queue and commits them in batches (group commit).

    The thread is built to share the GIL with a busy event loop: it sleeps once per batch to gather
    rows (never once per row), takes what is queued without blocking, and wakes each event loop once
    per commit for all of that loop's waiting requests. Every blocking call lets go of the GIL, and
    getting it back can take the interpreter's switch interval while the loop is busy, so the number
    of blocking calls per batch is what bounds the writer.
    """

    def __init__(
        self,
        store: PredictionStore,
        *,
        queue_size: int,
        batch_max: int,
        window_ms: float = 0.0,
        on_error: Any = None,
        on_dropped: Any = None,
        retry_s: float = 0.0,
    ) -> None:
        """``on_error(exc)``: a commit failed (after its retry); ``on_dropped(n)``: the ``n`` rows of a failed
        commit that nobody waited for (async durability, shadows), lost. ``retry_s``: how long the rows nobody
        waits for are retried after a failed commit (with back-off, idempotent inserts) before they are dropped;
        meanwhile new rows queue, and the queue's bound sheds load."""
        self.store = store
        self.queue_size = queue_size
        self.batch_max = batch_max
        self.window_s = window_ms / 1000.0
        self.on_error = on_error
        self.on_dropped = on_dropped
        self.retry_s = retry_s
        self._closing = threading.Event()
        self._items: collections.deque[Any] = collections.deque()
        self._queued_rows = 0
        self._count_lock = threading.Lock()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="shipml-store-writer", daemon=True)
        self._thread.start()

    def has_room(self, n_rows: int) -> bool:
        """Whether ``n_rows`` more rows fit in the queue now (a unit bigger than the queue fits an empty one).
        Only a hint: another request can take the room before this one queues; ``reserve`` cannot lose it."""
        return self._queued_rows == 0 or self._queued_rows + n_rows <= self.queue_size

    def reserve(self, n_rows: int) -> None:
        """Take room for ``n_rows`` rows at once, or raise StoreFull and take none (the rule of every put).

        For a batch logged in several pieces: reserve the whole batch first, pass ``reserved=True`` with
        each piece, and ``release`` what was not submitted (records refused by validation, a failed
        prediction); then no piece can find the queue full after an earlier one was logged."""
        with self._count_lock:
            if n_rows and self._queued_rows + n_rows > self.queue_size and self._queued_rows > 0:
                raise StoreFull("the prediction log queue is full")
            self._queued_rows += n_rows

    def release(self, n_rows: int) -> None:
        """Give back reserved room that no row will use."""
        if n_rows:
            with self._count_lock:
                self._queued_rows -= n_rows

    def _put(self, rows: Unit, waiter: Any, reserved: bool) -> None:
        if not reserved:
            self.reserve(len(rows))
        self._items.append((rows, waiter))
        if not self._wake.is_set():
            self._wake.set()

    def submit(self, row: Prediction) -> concurrent.futures.Future[None]:
        """Queue ``row``; the future completes when it is committed. Raises StoreFull at once if full."""
        return self.submit_many([row])

    def submit_many(self, rows: Sequence[Prediction], *, reserved: bool = False) -> concurrent.futures.Future[None]:
        """Queue several rows as one unit (all committed in one batch). ``reserved``: their room was taken
        by ``reserve``, so they are neither checked nor counted again."""
        fut: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._put(list(rows), fut, reserved)
        return fut

    def submit_waitable(self, rows: Unit, *, reserved: bool = False) -> asyncio.Future[None]:
        """Like ``submit_many``, for a caller on an event loop: an asyncio future of this loop,
        resolved together with the rest of the commit's futures of the same loop (one wake-up)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._put(_unit(rows), (loop, fut), reserved)
        return fut

    def enqueue(self, rows: Unit, *, reserved: bool = False) -> None:
        """Queue rows nobody waits for (``async`` durability)."""
        self._put(_unit(rows), None, reserved)

    @property
    def pending(self) -> int:
        return self._queued_rows

    def _run(self) -> None:
        keeper = self.store.histograms.keeper
        while True:
            if not self._wake.wait(keeper.flush_s):
                self._flush_histograms()  # idle: the open minutes' counts still reach the store
                continue
            if self.window_s > 0:
                time.sleep(self.window_s)  # group commit: one sleep gathers what arrives meanwhile
            self._wake.clear()
            batch, stop = self._take()
            if batch:
                self._commit(batch)
            if stop or keeper.due():
                self._flush_histograms(force=stop)
            if stop:
                return
            if self._items:
                self._wake.set()

    def _take(self) -> tuple[list[tuple[Unit, Any]], bool]:
        """What the next commit holds (up to ``batch_max`` rows, whole units), and whether to stop after it."""
        batch: list[tuple[Unit, Any]] = []
        n_rows = 0
        stop = False
        while self._items:
            head = self._items[0]
            if head is _STOP:
                self._items.popleft()
                stop = True
                break
            if batch and n_rows + len(head[0]) > self.batch_max:
                break
            batch.append(self._items.popleft())
            n_rows += len(head[0])
        if n_rows:
            with self._count_lock:
                self._queued_rows -= n_rows
        return batch, stop

    def _commit(self, batch: list[tuple[Unit, Any]]) -> None:
        units = [item for item, _ in batch]
        # one retry at once: a connection reset or a failover costs a retry, not the rows (nor a waiter's 503)
        error = self._write(units, attempts=2)
        _notify(batch, error)
        if error is None:
            self.store.histograms.observe(units)  # after the waiters are woken: off their latency
            return
        unwaited = [item for item, waiter in batch if waiter is None]
        if unwaited and self._retry(unwaited):
            self.store.histograms.observe(unwaited)
            return
        lost = sum(len(item) for item in unwaited)
        if lost and self.on_dropped is not None:
            self.on_dropped(lost)

    def _write(self, units: list[Unit], attempts: int) -> StoreError | None:
        """Write ``units`` in one transaction, trying ``attempts`` times; the error of the last attempt, if all
        failed (reported to ``on_error`` once)."""
        for attempt in range(attempts):
            try:
                self.store.predictions.write(units)
                return None
            except Exception as exc:  # noqa: BLE001 - any driver error: the writer thread must live on, and say so
                if attempt == attempts - 1:
                    if self.on_error is not None:
                        self.on_error(exc)
                    return StoreError(f"prediction log write failed: {type(exc).__name__}")
        return None

    def _retry(self, units: list[Unit]) -> bool:
        """Write the rows nobody waits for again, with back-off, for up to ``retry_s`` (less once closing): a
        restarted or failed-over database loses none of them. Safe if an earlier attempt did commit: the insert
        skips rows already stored. Whether they were written."""
        deadline = time.monotonic() + self.retry_s
        pause = RETRY_FIRST_S
        while time.monotonic() + pause <= deadline and not self._closing.wait(pause):
            try:
                self.store.predictions.write(units)
                return True
            except Exception:  # noqa: BLE001 - any driver error: try again until the deadline
                pause = min(pause * 2, RETRY_MAX_S)
        return False

    def _flush_histograms(self, *, force: bool = False) -> None:
        """The histograms' changed minutes to the store; a failure is reported, never fatal (they can be
        rebuilt from the rows with ``shipml monitor drift --recompute``)."""
        try:
            self.store.histograms.flush(force=force)
        except Exception as exc:  # noqa: BLE001 - any driver error: the writer thread must live on, and say so
            if self.on_error is not None:
                self.on_error(exc)

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until everything queued before this call is committed."""
        marker = self.submit_many([], reserved=True)
        marker.result(timeout=timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Commit what is queued, then stop the thread (a failing commit is no longer retried: its rows are
        dropped, counted)."""
        self._closing.set()
        self._items.append(_STOP)
        self._wake.set()
        self._thread.join(timeout=timeout)


def _unit(rows: Unit) -> Unit:
    """``rows`` as queued: a list of its own (the caller's may change), a batch of columns as it is."""
    return rows if isinstance(rows, PredictionBatch) else list(rows)


def _notify(batch: list[tuple[Unit, Any]], error: StoreError | None) -> None:
    """Complete the waiters of a commit: thread futures at once, each event loop's futures in one wake-up."""
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for _, waiter in batch:
        if waiter is None:
            continue
        if isinstance(waiter, concurrent.futures.Future):
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)
        else:
            by_loop.setdefault(waiter[0], []).append(waiter[1])
    for loop, futures in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting any more
            loop.call_soon_threadsafe(_resolve, futures, error)


def _resolve(futures: list[asyncio.Future[None]], error: StoreError | None) -> None:
    for fut in futures:
        if fut.done():  # the request was cancelled (client went away)
            continue
        if error is None:
            fut.set_result(None)
        else:
            fut.set_exception(error)
