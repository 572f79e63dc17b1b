"""Every worker follows the store's canary: it serves the candidate as the variant ``canary`` with the current weight.

The controller (`shipml deploy canary`, pipelines/canary.py) writes the canary's state to the store; each worker of
each replica reads it on a poll (``serve.reload_interval_s``, at least every few seconds while a canary is active) and
changes its deployment: the candidate is loaded beside the champion (the deployment changes only once it is loaded),
then takes its weight of the champion's traffic, with its own salt (the state's, the same in every worker); when the canary ends (rolled back, aborted, promoted) it leaves the split. While
a promotion is being done (``promoting``) the candidate keeps its 100 %; the registry's alias moves before the canary
is written promoted, so the champion is reloaded before the canary leaves: its traffic never goes back to the old
version. A worker that starts while a canary is active serves it from its first poll.

The state is also exposed as gauges (``shipml_canary_state``, ``shipml_canary_weight``,
``shipml_canary_updated_timestamp_seconds``), the same in every worker since all read the same row.
"""

from __future__ import annotations

from collections.abc import Iterator

import anyio.to_thread
import structlog
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from shipml.adapters.registry import ModelRef
from shipml.adapters.store import PredictionStore
from shipml.core.canary import STATUSES, Canary
from shipml.core.prediction import CANARY_VARIANT
from shipml.server.model_manager import ModelManager
from shipml.server.periodic import Periodic

log = structlog.get_logger("shipml.canary")

ACTIVE_POLL_S = 2.0  # while a canary serves, its state is read at least this often (a rollback takes effect fast)
IDLE_POLL_S = 10.0  # without one, at least this often (a new canary starts within this)


class CanaryFollower(Collector):
    """Reads the canary of ``model`` and applies it to ``manager``; its gauges at scrape time."""

    def __init__(self, store: PredictionStore, model: str, manager: ModelManager, poll_s: float) -> None:
        self.store = store
        self.model = model
        self.manager = manager
        self.poll_s = poll_s
        self.state: Canary | None = None
        self._applied: tuple[str, float, str] | None = None  # (candidate, weight, salt) the deployment serves
        self._loop = Periodic("canary-follower", self.follow, self._next_poll_s, model=model)

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    def _next_poll_s(self) -> float:
        active = self.state is not None and self.state.serving
        return min(self.poll_s, ACTIVE_POLL_S if active else IDLE_POLL_S) if self.poll_s > 0 else ACTIVE_POLL_S

    async def follow(self) -> None:
        """One poll: read the canary and make the deployment serve it (or stop serving it)."""
        state = await anyio.to_thread.run_sync(self.store.canaries.read, self.model)
        self.state = state
        want = (state.candidate, state.weight, state.routing_salt) if state is not None and state.serving else None
        if want == self._applied:
            return
        if want is None:
            if state is not None and state.status == "promoted":
                await self.manager.reload()  # the alias moved to the candidate: serve it before the canary leaves
            await self.manager.set_canary(None, 0.0, CANARY_VARIANT)
            log.info("canary_left", model=self.model, status=state.status if state else None)
        else:
            candidate, weight, salt = want
            await self.manager.set_canary(ModelRef(self.model, candidate), weight, CANARY_VARIANT, salt)
            loaded = self.manager.canary is not None and self.manager.canary.current is not None
            if not loaded:
                return  # not loaded (yet): no traffic, so the controller holds; the next poll tries again
            log.info("canary_serving", model=self.model, candidate=candidate, weight=weight)
        self._applied = want

    def collect(self) -> Iterator[GaugeMetricFamily]:
        state = self.state
        if state is None:
            return
        labels = [state.model, state.candidate]
        status = GaugeMetricFamily(
            "shipml_canary_state", "1 for the canary's current state", labels=["model", "candidate", "state"]
        )
        for s in STATUSES:
            status.add_metric([*labels, s], 1.0 if s == state.status else 0.0)
        weight = GaugeMetricFamily(
            "shipml_canary_weight", "the candidate's share of the champion's requests (0 once the canary ended)",
            labels=["model", "candidate"],
        )  # fmt: skip
        weight.add_metric(labels, state.weight)
        updated = GaugeMetricFamily(
            "shipml_canary_updated_timestamp_seconds", "when the canary last changed state or step",
            labels=["model", "candidate"],
        )  # fmt: skip
        updated.add_metric(labels, state.updated_at)
        yield from (status, weight, updated)
