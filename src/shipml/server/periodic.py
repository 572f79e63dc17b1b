"""The service's background loops (the registry poll, the canary follower, the routing watch, the store's upkeep,
the monitoring job): one task per loop, started with the service and cancelled at its shutdown.

Each loop is a step and a wait. A step that raises is logged and the loop goes on (a registry or store hiccup must
never stop a worker's polls: the next step retries); the wait is asked again after each step, so a loop can poll
faster while a canary is active or back off while the registry is down.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger("shipml.server")


class Periodic:
    """Runs ``step`` then sleeps ``wait()`` seconds, until stopped (``wait_first``: sleep before the first step);
    ``fields`` go in the log line of a failed step (the model the loop is for)."""

    def __init__(
        self,
        name: str,
        step: Callable[[], Awaitable[object]],
        wait: Callable[[], float],
        *,
        wait_first: bool = False,
        **fields: str,
    ) -> None:
        self.name = name
        self.fields = fields
        self.step = step
        self.wait = wait
        self.wait_first = wait_first
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"shipml-{self.name}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        if self.wait_first:
            await asyncio.sleep(self.wait())
        while True:
            try:
                await self.step()
            except Exception as exc:  # noqa: BLE001 - one failed step never ends the loop: the next one retries
                log.warning(
                    "background_step_failed", loop=self.name, **self.fields, error=f"{type(exc).__name__}: {exc}"
                )
            await asyncio.sleep(self.wait())
