"""The store's upkeep inside the service: every ``store.retention.interval_s``, in whichever worker of all replicas
holds the store's lease, Postgres's daily partitions are made ``store.partitions_ahead_days`` ahead, and, with
``store.retention.predictions`` set, the store is pruned as `shipml store prune` would (a refused prune, under a
running canary or experiment, is logged and tried again at the next run). The first run is at start-up, so a new
store has its days ahead before the first midnight."""

from __future__ import annotations

import anyio.to_thread
import structlog

from shipml.adapters.store import PredictionStore
from shipml.adapters.store.leases import new_holder
from shipml.adapters.store.retention import Pruned
from shipml.config import Settings
from shipml.errors import PruneRefused, ShipmlError
from shipml.server.periodic import Periodic

log = structlog.get_logger("shipml.store")

LEASE = "store:maintenance"


class StoreMaintenance:
    """Runs the store's upkeep on a schedule, one runner across workers and replicas (see the module docstring)."""

    def __init__(self, settings: Settings, store: PredictionStore) -> None:
        self.settings = settings
        self.store = store
        self.holder = new_holder()
        self._loop = Periodic(
            "store-maintenance", lambda: anyio.to_thread.run_sync(self.tick), lambda: store_interval(settings)
        )

    def start(self) -> None:
        if store_interval(self.settings) > 0:
            self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    def tick(self) -> Pruned | None:
        """One run if this process holds the lease: the days ahead, then the prune; what was pruned (None: not
        this process's turn, no retention set, refused or failed, each logged)."""
        from shipml.pipelines.retention import prune

        store = self.settings.store
        try:
            if not self.store.leases.acquire(LEASE, self.holder, 2 * store.retention.interval_s):
                return None
            created = self.store.partitions.ensure(store.partitions_ahead_days)
            if created:
                log.info("store_partitions_created", partitions=created)
            if store.retention.predictions is None:
                return None
            pruned = prune(self.settings, self.store, None)
        except PruneRefused as exc:
            log.info("store_prune_refused", reason=exc.message)
            return None
        except ShipmlError as exc:  # the service keeps serving; the next run tries again
            log.warning("store_maintenance_failed", error=exc.message)
            return None
        log.info(
            "store_pruned", cut=pruned.cut, partitions=list(pruned.partitions), predictions=pruned.predictions,
            feedback=pruned.feedback, histograms=pruned.histograms, reports=pruned.reports, seconds=pruned.seconds,
        )  # fmt: skip
        return pruned


def store_interval(settings: Settings) -> float:
    return settings.store.retention.interval_s
