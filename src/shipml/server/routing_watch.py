"""Replicas compare their routing: each serving process announces, every poll, a fingerprint of what decides a key's
variant (the salt, the variants, their weights and models: ``core.routing.routing_fingerprint``) and reads the
others' from the store. ``shipml_routing_mismatch`` is 1 while any live process of the same model announces another
one: a replica started with another salt or other weights would send some keys to another variant than the rest of
the fleet (sticky routing broken, the experiment's evidence mixed); the alert ShipmlRoutingMismatch names the model.

The canary's split is not part of the fingerprint: every process follows the one canary in the store, and takes a
step within a poll of the others.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import anyio.to_thread
import structlog
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from shipml.adapters.store import PredictionStore
from shipml.adapters.store.announcements import Announcement
from shipml.adapters.store.leases import new_holder
from shipml.config import ServeSettings
from shipml.core.prediction import DEFAULT_VARIANT
from shipml.core.routing import routing_fingerprint
from shipml.server.periodic import Periodic

log = structlog.get_logger("shipml.routing")

POLL_S = 10.0  # at least this often, whatever serve.reload_interval_s
TTL_POLLS = 3  # an announcement lives this many polls: a stopped process drops out after them


def routing_of(serve: ServeSettings, model_ref: str) -> tuple[str, str]:
    """This configuration's routing fingerprint and a readable summary of it (no salt)."""
    if serve.variants:
        variants = [(v.name, v.weight, v.model) for v in serve.variants]
    else:
        variants = [(DEFAULT_VARIANT, 1.0, model_ref)]
    summary = ", ".join(f"{name} {weight:g} {model}" for name, weight, model in variants)
    return routing_fingerprint(serve.routing_salt, variants), summary


class RoutingWatch(Collector):
    """Announces this process's routing of ``model`` and compares it with every live process's."""

    def __init__(self, store: PredictionStore, model: str, serve: ServeSettings, model_ref: str) -> None:
        self.store = store
        self.model = model
        self.poll_s = min(serve.reload_interval_s, POLL_S) if serve.reload_interval_s > 0 else POLL_S
        self.fingerprint, self.summary = routing_of(serve, model_ref)
        self.process = new_holder()
        self.others: list[Announcement] = []  # the live processes whose routing differs from ours
        self.processes = 0  # live processes of this model, this one included
        self._loop = Periodic("routing-watch", self.check, lambda: self.poll_s, model=model)

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()
        with contextlib.suppress(Exception):  # best effort: otherwise it expires after TTL_POLLS polls
            await anyio.to_thread.run_sync(self.store.announcements.withdraw, self.model, self.process)

    async def check(self) -> None:
        """One poll: announce ours, read every live one, log a mismatch when it starts."""
        live = await anyio.to_thread.run_sync(
            self.store.announcements.announce,
            self.model, self.process, self.fingerprint, self.summary, self.poll_s * TTL_POLLS,
        )  # fmt: skip
        others = [a for a in live if a.fingerprint != self.fingerprint]
        if others and not self.others:
            log.error(
                "routing_mismatch", model=self.model, ours=self.summary,
                theirs=sorted({f"{a.process}: {a.summary}" for a in others}),
            )  # fmt: skip
        self.others, self.processes = others, len(live)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        mismatch = GaugeMetricFamily(
            "shipml_routing_mismatch",
            "1 while a live serving process of the model routes with another salt, variants or weights than this one",
            labels=["model"],
        )
        mismatch.add_metric([self.model], 1.0 if self.others else 0.0)
        processes = GaugeMetricFamily(
            "shipml_routing_processes", "live serving processes of the model announcing their routing",
            labels=["model"],
        )  # fmt: skip
        processes.add_metric([self.model], float(self.processes))
        yield from (mismatch, processes)
