"""The micro-batcher: concurrent requests become one predictor call, each gets its own answers."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest

from shipml.core.model import build_pipeline, make_estimator
from shipml.core.predictor import Outputs, PipelinePredictor
from shipml.core.schema import FeatureSchema
from shipml.examples.churn import generate_churn
from shipml.pipelines.data import feature_frame
from shipml.pipelines.fast_path import rows_from_frame
from shipml.server.batcher import MicroBatcher

DF = generate_churn(300, seed=2)
SCHEMA = FeatureSchema.infer(DF, "churn", id_columns=("customer_id",))
PIPELINE = build_pipeline(
    SCHEMA, make_estimator("sklearn.ensemble.RandomForestClassifier", {"n_estimators": 5}, "binary", 0)
)
PIPELINE.fit(feature_frame(DF, SCHEMA), DF.churn)
ROWS = rows_from_frame(feature_frame(DF.head(40), SCHEMA), SCHEMA)


class Counting:
    """The pipeline's predictor, counting its calls and the rows of each."""

    name = "pipeline"
    inline_max_rows = 0
    batching_pays = True

    def __init__(self, fail: bool = False) -> None:
        self.inner = PipelinePredictor(PIPELINE, SCHEMA)
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
        return await asyncio.gather(*(batcher.predict(ROWS[i : i + 2]) for i in range(0, 20, 2)))

    answers = asyncio.run(many())
    assert predictor.sizes == [20]  # ten requests, one call
    alone = PipelinePredictor(PIPELINE, SCHEMA)
    for k, got in enumerate(answers):
        assert got.proba is not None
        np.testing.assert_array_equal(got.proba, alone.predict(ROWS[2 * k : 2 * k + 2]).proba)


def test_a_full_batch_goes_at_once_and_the_rest_after_the_wait() -> None:
    predictor = Counting()
    batcher = MicroBatcher(predictor, max_batch_size=8, max_wait_ms=20)

    async def many() -> None:
        await asyncio.gather(*(batcher.predict([r]) for r in ROWS[:11]))

    asyncio.run(many())
    assert predictor.sizes == [8, 3]


def test_a_failure_reaches_every_request_of_the_batch() -> None:
    batcher = MicroBatcher(Counting(fail=True), max_batch_size=64, max_wait_ms=5)

    async def many() -> list[Any]:
        return await asyncio.gather(*(batcher.predict([r]) for r in ROWS[:3]), return_exceptions=True)

    results = asyncio.run(many())
    assert [str(r) for r in results] == ["model exploded"] * 3


@pytest.mark.parametrize("wait_ms", [0.0, 1.0])
def test_a_lone_request_is_answered_after_the_wait(wait_ms: float) -> None:
    predictor = Counting()
    batcher = MicroBatcher(predictor, max_batch_size=64, max_wait_ms=wait_ms)
    got = asyncio.run(batcher.predict(ROWS[:1]))
    assert got.proba is not None and got.proba.shape == (1, 2)
    assert predictor.sizes == [1]
