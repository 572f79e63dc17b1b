"""Waits for commits fail with StoreError once store.timeout_s has passed, one timer for all of them
(server/predictions.py's CommitDeadlines): committed waits are untouched, late ones fail in order, and a wait
whose request went away is dropped."""

from __future__ import annotations

import asyncio

import pytest

from shipml.errors import StoreError
from shipml.server.predictions import CommitDeadlines


def test_late_commits_fail_at_their_deadline_and_others_are_untouched() -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        deadlines = CommitDeadlines(0.2)
        committed, late, gone = loop.create_future(), loop.create_future(), loop.create_future()
        for waiting in (committed, gone, late):
            deadlines.watch(waiting)
        committed.set_result(None)
        gone.cancel()
        await asyncio.sleep(0.05)
        later = loop.create_future()
        deadlines.watch(later)  # began 50 ms after the others: its own deadline
        started = loop.time()
        with pytest.raises(StoreError, match=r"store\.timeout_s \(0\.2 s\)"):
            await late
        assert 0.1 <= loop.time() - started + 0.05 <= 1.0
        assert not later.done()  # its deadline has not come yet
        with pytest.raises(StoreError):
            await later
        assert committed.result() is None and gone.cancelled()
        assert deadlines._timer is None  # nothing pending: no timer

    asyncio.run(run())


def test_a_new_event_loop_starts_afresh() -> None:
    deadlines = CommitDeadlines(0.1)

    async def wait_one(commit: bool) -> None:
        waiting = asyncio.get_running_loop().create_future()
        deadlines.watch(waiting)
        if commit:
            waiting.set_result(None)
        await waiting

    asyncio.run(wait_one(commit=True))  # leaves a timer on a loop that then closes
    with pytest.raises(StoreError):
        asyncio.run(wait_one(commit=False))
