"""The service's background loops (server/periodic.py): a failing step never ends the loop, the wait is asked again
after every step, and stop ends the loop at once, between steps or during one."""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from shipml.server.periodic import Periodic


def test_a_failing_step_is_logged_and_the_next_step_runs() -> None:
    steps: list[int] = []

    async def step() -> None:
        steps.append(len(steps))
        if len(steps) == 2:
            raise RuntimeError("the store hiccuped")

    async def scenario() -> None:
        loop = Periodic("test-loop", step, lambda: 0.001, model="churn")
        loop.start()
        while len(steps) < 4:
            await asyncio.sleep(0.001)
        await loop.stop()

    with capture_logs() as logs:
        asyncio.run(scenario())
    failed = [e for e in logs if e["event"] == "background_step_failed"]
    assert len(failed) == 1 and failed[0]["loop"] == "test-loop" and failed[0]["model"] == "churn"
    assert failed[0]["error"] == "RuntimeError: the store hiccuped"


@pytest.mark.parametrize("wait_first", [True, False])
def test_the_wait_is_asked_after_each_step_and_first_only_when_asked(wait_first: bool) -> None:
    events: list[str] = []

    async def step() -> None:
        events.append("step")

    def wait() -> float:
        events.append("wait")
        return 0.001

    async def scenario() -> None:
        loop = Periodic("test-loop", step, wait, wait_first=wait_first)
        loop.start()
        while events.count("step") < 3:
            await asyncio.sleep(0.001)
        await loop.stop()

    asyncio.run(scenario())
    expected = ["wait", "step"] * 3 if wait_first else ["step", "wait"] * 3
    assert events[:6] == expected


def test_stop_cancels_a_step_in_progress_and_a_loop_never_started() -> None:
    started, finished = asyncio.Event(), []

    async def slow_step() -> None:
        started.set()
        await asyncio.sleep(60)
        finished.append(True)

    async def scenario() -> None:
        await Periodic("never-started", slow_step, lambda: 1.0).stop()
        loop = Periodic("test-loop", slow_step, lambda: 1.0)
        loop.start()
        await started.wait()
        await asyncio.wait_for(loop.stop(), timeout=5)

    asyncio.run(scenario())
    assert finished == []
