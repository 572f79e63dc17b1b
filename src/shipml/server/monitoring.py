"""Monitoring inside the service: the stored reports as gauges at scrape time, and the jobs on a schedule.

The gauges show the store's newest reports, so every worker and every replica shows the same numbers, and they
are exactly the numbers of the stored report that ``shipml monitor report`` draws (the drift report) or ``shipml
ab report`` prints (the experiment report). A scrape never reads the store: ``ReportRefresher`` reads the newest
reports every ``REFRESH_S`` on a thread of its own, and a scrape serves what it last found, so a database that
stops answering leaves the last gauges served and the worker answering (predictions, health) instead of holding
its event loop. The routing weights are read from the deployment serving at scrape time. The scheduled
jobs (``monitor.interval_s`` > 0: the monitoring job, and the experiment report when the config has
``serve.variants`` or ``serve.shadow``) run in one process at a time across workers and replicas: each
worker tries to take the store's lease at each tick, and only its holder runs.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Generic, TypeVar, get_args

import anyio.to_thread
import structlog
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from shipml.adapters.registry import MlflowRegistry
from shipml.adapters.store import PredictionStore
from shipml.adapters.store.leases import new_holder
from shipml.config import Settings
from shipml.core.experiment_report import ExperimentReport
from shipml.core.experiments import Verdict
from shipml.core.monitor_report import DriftReport
from shipml.errors import StoreError
from shipml.pipelines.workspace import Workspace
from shipml.server.periodic import Periodic

if TYPE_CHECKING:
    from shipml.core.window import Window
    from shipml.pipelines.experiments import ExperimentJob
    from shipml.pipelines.monitor import MonitorJob
    from shipml.server.model_manager import Deployment

log = structlog.get_logger("shipml.monitor")

REFRESH_S = 1.0  # each worker reads the newest stored reports this often, off the event loop (one indexed row)
LEASE = "monitor:{model}"
VERDICTS: tuple[str, ...] = get_args(Verdict)  # each has its shipml_experiment_verdict series, 1 or 0
T = TypeVar("T")


class _Newest(Generic[T]):
    """The newest stored report of a model as last read: ``refresh`` reads the store (blocking, so never on the
    event loop), ``get`` serves what it found."""

    def __init__(self, read: Callable[[], T | None], what: str) -> None:
        self.read = read
        self.what = what  # the log event when the stored report cannot be read
        self._report: T | None = None

    def refresh(self) -> None:
        try:
            report = self.read()
        except StoreError as exc:  # the gauges are absent until a read succeeds; the log says why
            log.warning(self.what, error=exc.message)
            report = None
        self._report = report

    def get(self) -> T | None:
        return self._report


class ReportRefresher:
    """Keeps the collectors' stored reports fresh: ``refresh`` each every ``interval_s`` on a daemon thread of its
    own (a read hung on the database holds that thread only, never the event loop or the shutdown)."""

    def __init__(self, *collectors: ReportCollector | ExperimentCollector, interval_s: float = REFRESH_S) -> None:
        self.collectors = collectors
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="shipml-report-refresh", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ends the refreshes; not waited for (a read may hang on the database)."""
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            for collector in self.collectors:
                collector.refresh()
            self._stop.wait(self.interval_s)


class ReportCollector(Collector):
    """The newest stored DriftReport of ``model`` as gauges; ``shipml_ready`` from ``ready``."""

    def __init__(self, store: PredictionStore, model: str, ready: Callable[[], bool]) -> None:
        self.store = store
        self.model = model
        self.ready = ready
        self._newest = _Newest(lambda: store.reports.latest(model), "monitor_report_unreadable")

    def refresh(self) -> None:
        """Read the newest stored report (blocking: the refresher's thread calls this)."""
        self._newest.refresh()

    def report(self) -> DriftReport | None:
        return self._newest.get()

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


class ExperimentCollector(Collector):
    """The newest stored experiment report of ``model`` as gauges, and the routing weights of the deployment
    that serves now (``deployment()``, read at every scrape: it follows a reload or a canary's new split)."""

    def __init__(self, store: PredictionStore, model: str, deployment: Callable[[], Deployment | None]) -> None:
        self.store = store
        self.model = model
        self.deployment = deployment
        self._newest = _Newest(lambda: store.experiments.latest(model), "experiment_report_unreadable")

    def refresh(self) -> None:
        """Read the newest stored report (blocking: the refresher's thread calls this)."""
        self._newest.refresh()

    def report(self) -> ExperimentReport | None:
        return self._newest.get()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        deployment = self.deployment()
        if deployment is not None:
            yield weight_gauge(deployment)
        report = self.report()
        if report is not None:
            yield from experiment_gauges(report)


def weight_gauge(deployment: Deployment) -> GaugeMetricFamily:
    """``shipml_variant_weight``: each primary variant's weight in the split; without a split the first variant
    serves everything (1); a variant the split leaves out (a champion while a canary takes all) gets 0."""
    weight = GaugeMetricFamily(
        "shipml_variant_weight",
        "the share of requests routed to a primary variant now (its weight in the split; 1 without an experiment)",
        labels=["model", "variant"],
    )
    split = deployment.split
    if split is None:
        weights = {deployment.variants[0].variant: 1.0}
    else:
        weights = dict(zip(split.names, split.weights, strict=True))
    for v in deployment.variants:
        weight.add_metric([v.name, v.variant], weights.get(v.variant, 0.0))
    return weight


def experiment_gauges(report: ExperimentReport) -> Iterator[GaugeMetricFamily]:
    """The gauges of one experiment report (the names are the contract of deploy/prometheus/rules.yml)."""
    model = report.model
    verdict = GaugeMetricFamily(
        "shipml_experiment_verdict",
        "1 for the verdict of the latest experiment report, 0 for the other verdicts",
        labels=["model", "verdict"],
    )
    for name in VERDICTS:
        verdict.add_metric([model, name], 1.0 if name == report.verdict else 0.0)
    difference = GaugeMetricFamily(
        "shipml_experiment_difference",
        "a variant minus the champion on the primary metric or a guardrail's: the estimate and its anytime-valid "
        "interval",
        labels=["model", "variant", "metric", "bound"],
    )
    for c in report.challengers:
        d = c.primary.difference
        _bounds(difference, [model, c.variant, c.primary.metric], (d.estimate, d.lower, d.upper))
        for g in c.guardrails:
            _bounds(difference, [model, c.variant, g.name], (math.nan, g.lower, g.upper))
    for s in report.shadows:
        d = s.comparison.difference
        _bounds(difference, [model, s.variant, s.comparison.metric], (d.estimate, d.lower, d.upper))
    srm = GaugeMetricFamily(
        "shipml_experiment_srm_p_value",
        "chi-square p-value of the units each primary variant received against the weights (low: a sample ratio "
        "mismatch)",
        labels=["model"],
    )
    if not math.isnan(report.srm.p_value):
        srm.add_metric([model], report.srm.p_value)
    units = GaugeMetricFamily(
        "shipml_experiment_units",
        "units (distinct routing keys plus requests without one) of each variant in the report's window",
        labels=["model", "variant"],
    )
    for v in report.variants:
        units.add_metric([model, v.name], float(v.units))
    created = GaugeMetricFamily(
        "shipml_experiment_report_timestamp_seconds", "when the latest experiment report was made", labels=["model"]
    )
    created.add_metric([model], report.created)
    yield from (verdict, difference, srm, units, created)


def _bounds(family: GaugeMetricFamily, labels: Sequence[str], bounds: tuple[float, float, float]) -> None:
    """An interval's estimate, lower and upper bounds as three series (NaN ones left out)."""
    for bound, value in zip(("estimate", "lower", "upper"), bounds, strict=True):
        if not math.isnan(value):
            family.add_metric([*labels, bound], value)


class ScheduledMonitor:
    """Runs the monitoring job every ``monitor.interval_s`` in whichever worker holds the store's lease, and
    with an experiment in the config (``serve.variants`` or ``serve.shadow``) stores its report too."""

    def __init__(self, settings: Settings, store: PredictionStore, registry: MlflowRegistry, model: str) -> None:
        self.settings = settings
        self.store = store
        self.workspace = Workspace(settings, store, registry)  # the service's store and registry, for the jobs
        self.model = model
        self.holder = new_holder()
        self._job: MonitorJob | None = None
        self._experiments: ExperimentJob | None = None
        interval = settings.monitor.interval_s
        self._loop = Periodic("monitor", lambda: anyio.to_thread.run_sync(self.tick), lambda: interval, wait_first=True)

    @property
    def job(self) -> MonitorJob:
        # the job's modules (pandas, scikit-learn for the multivariate check) load only when it is scheduled
        from shipml.pipelines.monitor import MonitorJob

        if self._job is None:
            self._job = MonitorJob.of(self.workspace)
        return self._job

    @property
    def experimenting(self) -> bool:
        """Whether the config serves an experiment (what ``shipml ab report`` judges)."""
        return bool(self.settings.serve.variants or self.settings.serve.shadow)

    @property
    def experiments(self) -> ExperimentJob:
        from shipml.pipelines.experiments import ExperimentJob

        if self._experiments is None:
            self._experiments = ExperimentJob.of(self.workspace)
        return self._experiments

    def start(self) -> None:
        if self.settings.monitor.interval_s > 0:  # monitor.window was checked when the config loaded
            self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    def tick(self) -> bool:
        """One run if this process holds the lease (taken for twice the interval); whether the monitoring job
        ran. The experiment report is computed and stored after it, whether or not the monitoring job failed."""
        try:
            if not self.store.leases.acquire(
                LEASE.format(model=self.model), self.holder, 2 * self.settings.monitor.interval_s
            ):
                return False
            from shipml.core.window import parse_window

            window = parse_window(self.settings.monitor.window, None, None)
        except Exception as exc:  # noqa: BLE001 - the service keeps serving; the stale gauge raises the alarm
            log.warning("monitor_run_failed", model=self.model, error=f"{type(exc).__name__}: {exc}")
            return False
        ran = self._monitor(window)
        if self.experimenting:
            self._experiment(window)
        return ran

    def _monitor(self, window: Window) -> bool:
        from shipml.pipelines.monitor import run_monitoring

        try:
            report, report_id = run_monitoring(self.workspace, self.model, window, job=self.job)
        except Exception as exc:  # noqa: BLE001 - the service keeps serving; the stale gauge raises the alarm
            log.warning("monitor_run_failed", model=self.model, error=f"{type(exc).__name__}: {exc}")
            return False
        log.info(
            "monitor_run", model=self.model, verdict=report.verdict, report=report_id, drop=report.performance_drop
        )
        return True

    def _experiment(self, window: Window) -> ExperimentReport | None:
        """Compute and store the experiment's report over ``window`` (None when it failed, logged)."""
        try:
            report = self.experiments.report(self.model, window, save=True)
        except Exception as exc:  # noqa: BLE001 - the service keeps serving; the report's timestamp gauge ages
            log.warning("experiment_run_failed", model=self.model, error=f"{type(exc).__name__}: {exc}")
            return None
        log.info("experiment_run", model=self.model, verdict=report.verdict, created=report.created,
                 winner=report.winner)  # fmt: skip
        return report


__all__ = [
    "ExperimentCollector",
    "ReportCollector",
    "ReportRefresher",
    "ScheduledMonitor",
    "experiment_gauges",
    "report_gauges",
    "weight_gauge",
]
