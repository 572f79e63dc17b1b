"""The micro-batcher: concurrent requests become one predictor call, each gets its own answers."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest

from shipml.core.predictor import Outputs, PipelinePredictor
from shipml.server.batcher import MicroBatcher
from tests.support.fitted import example_rows, forest

ROWS = 40  # rows of example data a test may use


def rows(n: int = ROWS) -> list[dict[str, Any]]:
    return example_rows(ROWS, 2)[:n]


class Counting:
    """The pipeline's predictor, counting its calls and the rows of each."""

    name = "pipeline"
    inline_max_rows = 0
    batching_pays = True

    def __init__(self, fail: bool = False) -> None:
        self.inner = PipelinePredictor(*forest())
        self.sizes: list[int] = []
        self.fail = fail

    def predict(self, rows: Sequence[Mapping[str, Any]]) -> Outputs:
        self.sizes.append(len(rows))
        if self.fail:
            raise RuntimeError("model exploded")
        return self.inner.predict(rows)


def test_concurrent_requests_share_one_call_and_get_their_own_rows() -> None:
    predictor = Counting()
    batcher = MicroBatcher(predictor, max_batch_size=64, max_wait_ms=50)

    async def many() -> list[Outputs]:
        return await asyncio.gather(*(batcher.predict(rows()[i : i + 2]) for i in range(0, 20, 2)))

    answers = asyncio.run(many())
    assert predictor.sizes == [20]  # ten requests, one call
    alone = PipelinePredictor(*forest())
    for k, got in enumerate(answers):
        assert got.proba is not None
        np.testing.assert_array_equal(got.proba, alone.predict(rows()[2 * k : 2 * k + 2]).proba)


def test_a_full_batch_goes_at_once_and_the_rest_after_the_wait() -> None:
    predictor = Counting()
    batcher = MicroBatcher(predictor, max_batch_size=8, max_wait_ms=20)

    async def many() -> None:
        await asyncio.gather(*(batcher.predict([r]) for r in rows(11)))

    asyncio.run(many())
    assert predictor.sizes == [8, 3]


def test_a_failure_reaches_every_request_of_the_batch() -> None:
    batcher = MicroBatcher(Counting(fail=True), max_batch_size=64, max_wait_ms=5)

    async def many() -> list[Any]:
        return await asyncio.gather(*(batcher.predict([r]) for r in rows(3)), return_exceptions=True)

    results = asyncio.run(many())
    assert [str(r) for r in results] == ["model exploded"] * 3


@pytest.mark.parametrize("wait_ms", [0.0, 1.0])
def test_a_lone_request_is_answered_after_the_wait(wait_ms: float) -> None:
    predictor = Counting()
    batcher = MicroBatcher(predictor, max_batch_size=64, max_wait_ms=wait_ms)
    got = asyncio.run(batcher.predict(rows(1)))
    assert got.proba is not None and got.proba.shape == (1, 2)
    assert predictor.sizes == [1]


def test_a_request_abandoned_at_its_timeout_is_not_computed_and_the_rest_are_answered() -> None:
    predictor = Counting()
    batcher = MicroBatcher(predictor, max_batch_size=4, max_wait_ms=10_000)

    async def abandon_then_fill() -> Outputs:
        lone = asyncio.ensure_future(batcher.predict(rows(1)))
        await asyncio.sleep(0)
        lone.cancel()  # what anyio.fail_after does to a request past serve.request_timeout_s
        return await batcher.predict(rows(4))  # the batch is full: called at once, without the abandoned row

    got = asyncio.run(abandon_then_fill())
    assert predictor.sizes == [4]
    assert got.proba is not None and len(got.proba) == 4
