"""Monitoring inside the service: the stored reports as gauges at scrape time, and the job on a schedule.

The gauges are read from the store's newest report when Prometheus scrapes (cached for a few seconds), so
every worker and every replica shows the same numbers, and they are exactly the numbers of the stored
report that ``shipml monitor report`` draws. The scheduled job (``monitor.interval_s`` > 0) runs in one
process at a time across workers and replicas: each worker tries to take the store's lease at each tick,
and only its holder runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import anyio.to_thread
import structlog
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from shipml.adapters.registry import MlflowRegistry
from shipml.adapters.store import PredictionStore
from shipml.config import Settings
from shipml.core.monitor_report import DriftReport
from shipml.pipelines.alerts import notify_change

if TYPE_CHECKING:
    from shipml.pipelines.monitor import MonitorJob

log = structlog.get_logger("shipml.monitor")

CACHE_S = 1.0  # a scrape reads the store at most this often per worker (one indexed row)
LEASE = "monitor:{model}"


class ReportCollector(Collector):
    """The newest stored DriftReport of ``model`` as gauges; ``shipml_ready`` from ``ready``."""

    def __init__(self, store: PredictionStore, model: str, ready: Callable[[], bool]) -> None:
        self.store = store
        self.model = model
        self.ready = ready
        self._cached: tuple[float, DriftReport | None] = (0.0, None)

    def report(self) -> DriftReport | None:
        at, report = self._cached
        if time.monotonic() - at < CACHE_S:
            return report
        try:
            found = self.store.latest_reports(self.model)
            report = DriftReport.from_json(found[0]["report"]) if found else None
        except Exception as exc:  # noqa: BLE001 - a scrape must answer; the gauges are absent, the log says why
            log.warning("monitor_report_unreadable", error=f"{type(exc).__name__}: {exc}")
            report = None
        self._cached = (time.monotonic(), report)
        return report

    def collect(self) -> Iterator[GaugeMetricFamily]:
        ready = GaugeMetricFamily("shipml_ready", "1 when this worker serves a loaded model and is not stopping")
        ready.add_metric([], 1.0 if self.ready() else 0.0)
        yield ready
        report = self.report()
        if report is not None:
            yield from report_gauges(report)


def report_gauges(report: DriftReport) -> Iterator[GaugeMetricFamily]:
    """The gauges of one report (the names are the contract of deploy/prometheus/rules.yml)."""
    head = ["model", "version", "variant"]
    score = GaugeMetricFamily(
        "shipml_drift_score",
        "a drift statistic of a feature over the last monitoring window",
        labels=[*head, "feature", "statistic"],
    )
    detected = GaugeMetricFamily(
        "shipml_drift_detected", "1 when the statistic's verdict is drift", labels=[*head, "feature", "statistic"]
    )
    performance = GaugeMetricFamily(
        "shipml_model_performance", "a realised or estimated metric over the window", labels=[*head, "metric", "kind"]
    )
    drop = GaugeMetricFamily(
        "shipml_performance_drop_detected",
        "1 when the metric is worse than the version's holdout value beyond the tolerance",
        labels=[*head, "metric", "kind"],
    )
    labels = GaugeMetricFamily("shipml_labels", "predictions of the window by feedback state", labels=[*head, "state"])
    for s in report.segments:
        key = [report.model, s.version, s.variant]
        for d in s.drift:
            if not d.decisive:
                continue
            score.add_metric([*key, d.feature, d.statistic], d.value)
            detected.add_metric([*key, d.feature, d.statistic], 1.0 if d.verdict == "drift" else 0.0)
        for p in s.performance:
            if p.estimate.value is None:
                continue
            performance.add_metric([*key, p.estimate.metric, p.estimate.kind], p.estimate.value)
            drop.add_metric([*key, p.estimate.metric, p.estimate.kind], 1.0 if p.dropped else 0.0)
        for state, n in s.labels.items():
            labels.add_metric([*key, state], float(n))
    last = GaugeMetricFamily(
        "shipml_monitor_last_success_timestamp_seconds",
        "when the monitoring job last stored a report",
        labels=["model"],
    )
    last.add_metric([report.model], report.created_at)
    yield from (score, detected, performance, drop, labels, last)


class ScheduledMonitor:
    """Runs the monitoring job every ``monitor.interval_s`` in whichever worker holds the store's lease."""

    def __init__(self, settings: Settings, store: PredictionStore, registry: MlflowRegistry, model: str) -> None:
        self.settings = settings
        self.store = store
        self.model = model
        self.holder = f"{os.uname().nodename}:{os.getpid()}:{os.urandom(4).hex()}"
        self.registry = registry
        self._job: MonitorJob | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def job(self) -> MonitorJob:
        # the job's modules (pandas, scikit-learn for the multivariate check) load only when it is scheduled
        from shipml.pipelines.monitor import MonitorJob

        if self._job is None:
            self._job = MonitorJob(self.settings.monitor, self.store, self.registry, Path(self.settings.home) / "cache")
        return self._job

    def start(self) -> None:
        if self.settings.monitor.interval_s > 0:
            from shipml.pipelines.monitor import duration_s

            duration_s(self.settings.monitor.window, "monitor.window")  # a bad window fails at start, not later
            self._task = asyncio.create_task(self._loop(), name="shipml-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        interval = self.settings.monitor.interval_s
        while True:
            await asyncio.sleep(interval)
            await anyio.to_thread.run_sync(self.tick)

    def tick(self) -> bool:
        """One run if this process holds the lease (taken for twice the interval); whether it ran."""
        try:
            if not self.store.acquire_lease(
                LEASE.format(model=self.model), self.holder, 2 * self.settings.monitor.interval_s
            ):
                return False
            from shipml.pipelines.monitor import parse_window

            window = parse_window(self.settings.monitor.window, None, None)
            report, report_id = self.job.run(self.model, window)
        except Exception as exc:  # noqa: BLE001 - the service keeps serving; the stale gauge raises the alarm
            log.warning("monitor_run_failed", model=self.model, error=f"{type(exc).__name__}: {exc}")
            return False
        log.info(
            "monitor_run", model=self.model, verdict=report.verdict, report=report_id, drop=report.performance_drop
        )
        notify_change(self.settings, report, report_id)  # monitor.webhook_url, when set
        return True


__all__ = ["ReportCollector", "ScheduledMonitor", "report_gauges"]
