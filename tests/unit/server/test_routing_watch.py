"""Replicas compare their routing through the store: a process whose salt, variants or weights differ from another
live process's shows shipml_routing_mismatch 1 from its next poll, the others too; a process that stops drops out."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from prometheus_client.core import GaugeMetricFamily

from shipml.adapters.store import PredictionStore
from shipml.config import ServeSettings
from shipml.server.routing_watch import RoutingWatch, routing_of

A_B = [{"name": "a", "model": "churn/1", "weight": 0.5}, {"name": "b", "model": "churn/2", "weight": 0.5}]


def _serve(variants: list[dict[str, object]], **kw: object) -> ServeSettings:
    return ServeSettings.model_validate({"variants": variants, "reload_interval_s": 1, **kw})


def _gauges(watch: RoutingWatch) -> dict[str, float]:
    out = {}
    for family in watch.collect():
        assert isinstance(family, GaugeMetricFamily)
        for sample in family.samples:
            assert sample.labels == {"model": "churn"}
            out[sample.name] = sample.value
    return out


@pytest.fixture
def store(tmp_path: Path) -> PredictionStore:
    return PredictionStore(f"sqlite:///{tmp_path}/p.db")


def test_the_fingerprint_changes_with_the_salt_the_order_a_weight_or_a_model_and_nothing_else() -> None:
    base = routing_of(_serve(A_B), "")[0]
    assert routing_of(_serve(list(reversed(A_B))), "")[0] != base  # the split hands out buckets in order
    assert routing_of(_serve(A_B, salt="other"), "")[0] != base
    assert routing_of(_serve([A_B[0] | {"weight": 0.6}, A_B[1] | {"weight": 0.4}]), "")[0] != base
    assert routing_of(_serve([A_B[0], A_B[1] | {"model": "churn/3"}]), "")[0] != base
    assert routing_of(_serve(A_B, max_batch=5), "")[0] == base  # other settings do not route
    assert routing_of(_serve([]), "churn@production")[0] != routing_of(_serve([]), "churn@staging")[0]


def test_a_process_with_other_weights_is_seen_by_every_process_at_its_next_poll(store: PredictionStore) -> None:
    first = RoutingWatch(store, "churn", _serve(A_B), "")
    second = RoutingWatch(store, "churn", _serve(A_B), "")
    odd = RoutingWatch(store, "churn", _serve([A_B[0] | {"weight": 0.9}, A_B[1] | {"weight": 0.1}]), "")
    other_model = RoutingWatch(store, "fraud", _serve([A_B[0] | {"weight": 0.9}, A_B[1] | {"weight": 0.1}]), "")

    async def poll(*watches: RoutingWatch) -> None:
        for w in watches:
            await w.check()

    asyncio.run(poll(first, second, other_model))
    asyncio.run(poll(first, second))
    assert _gauges(first) == {"shipml_routing_mismatch": 0.0, "shipml_routing_processes": 2.0}
    asyncio.run(poll(odd, first, second))  # the odd one joins: each sees it at its own next poll
    assert [_gauges(w)["shipml_routing_mismatch"] for w in (first, second, odd)] == [1.0, 1.0, 1.0]
    assert _gauges(first)["shipml_routing_processes"] == 3.0
    assert [a.summary for a in first.others] == ["a 0.9 churn/1, b 0.1 churn/2"]
    asyncio.run(odd.stop())  # withdrawn when it stops
    asyncio.run(poll(first, second))
    assert [_gauges(w)["shipml_routing_mismatch"] for w in (first, second)] == [0.0, 0.0]


def test_a_process_that_stops_announcing_drops_out_after_its_announcement_expires(store: PredictionStore) -> None:
    first = RoutingWatch(store, "churn", _serve(A_B), "")
    odd = RoutingWatch(store, "churn", _serve(A_B, salt="odd"), "")
    first.poll_s = odd.poll_s = 0.05  # an announcement lives 3 polls: 0.15 s
    asyncio.run(odd.check())  # killed after this: never withdrawn
    asyncio.run(first.check())
    assert _gauges(first)["shipml_routing_mismatch"] == 1.0

    async def later() -> None:
        await asyncio.sleep(0.3)
        await first.check()

    asyncio.run(later())
    assert _gauges(first) == {"shipml_routing_mismatch": 0.0, "shipml_routing_processes": 1.0}
