"""Micro-batching: concurrent requests to one deployment become one predictor call.

A model without a fast path pays a fixed cost per call (a DataFrame, the
ColumnTransformer, sklearn's checks: milliseconds), whatever the number of
rows. The batcher holds the first request for at most ``max_wait_ms``, takes
every request that arrives meanwhile (up to ``max_batch_size`` rows), runs the
predictor once in a worker thread (the event loop keeps serving) and hands each
request its own rows of the outputs. A request never waits longer than the
wait plus one predictor call, and a failure reaches every request of the batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import anyio.to_thread

from shipml.core.predictor import Outputs, Predictor
from shipml.core.records import Value


class MicroBatcher:
    """One per deployment (variant); created without a loop, bound to the loop of its first call."""

    def __init__(self, predictor: Predictor, max_batch_size: int, max_wait_ms: float) -> None:
        self.predictor = predictor
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self._waiting: list[tuple[Sequence[Mapping[str, Value]], asyncio.Future[Outputs]]] = []
        self._rows = 0
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def predict(self, rows: Sequence[Mapping[str, Value]]) -> Outputs:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Outputs] = loop.create_future()
        self._waiting.append((rows, fut))
        self._rows += len(rows)
        if self._rows >= self.max_batch_size:
            self._dispatch()
        elif self._timer is None:
            self._timer = loop.call_later(self.max_wait_s, self._dispatch)
        return await fut

    def _dispatch(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._waiting, self._rows = self._waiting, [], 0
        if batch:
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._tasks.add(task)  # keep a reference until it is done
            task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[tuple[Sequence[Mapping[str, Value]], asyncio.Future[Outputs]]]) -> None:
        batch = [(part, fut) for part, fut in batch if not fut.done()]  # a request past its timeout is cancelled
        if not batch:
            return
        rows = [r for part, _ in batch for r in part]
        try:
            outputs = await anyio.to_thread.run_sync(self.predictor.predict, rows)
        except Exception as exc:  # noqa: BLE001 - the model call failed: every request of the batch hears why
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        start = 0
        for part, fut in batch:
            end = start + len(part)
            if not fut.done():  # the request may have been cancelled meanwhile
                fut.set_result(_rows_of(outputs, start, end))
            start = end


def _rows_of(outputs: Outputs, start: int, end: int) -> Outputs:
    proba: Any = None if outputs.proba is None else outputs.proba[start:end]
    values: Any = None if outputs.values is None else outputs.values[start:end]
    return Outputs(outputs.classes, proba, values)
