"""The gauges of the stored reports are read off the event loop: a scrape serves what the last read found, so a
database that stops answering cannot stop a worker (H2; the same through real processes in
tests/integration/test_hung_store.py)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from shipml.adapters.store import PredictionStore
from shipml.server.metrics import ServerMetrics
from shipml.server.monitoring import ExperimentCollector, ReportCollector, ReportRefresher
from tests.unit.pipelines.test_alerts import report


class _Hung:
    """A part of the store as a database that stopped answering makes it: a read returns once ``release`` is set."""

    def __init__(self, release: threading.Event) -> None:
        self.release = release
        self.reads = 0

    def latest(self, model: str) -> Any:
        self.reads += 1
        self.release.wait(120)
        return None


def test_a_scrape_never_waits_for_the_store() -> None:
    release = threading.Event()
    store = SimpleNamespace(reports=_Hung(release), experiments=_Hung(release))
    metrics = ServerMetrics()
    metrics.collectors = [
        ReportCollector(store, "churn", lambda: True),  # type: ignore[arg-type]
        ExperimentCollector(store, "churn", lambda: None),  # type: ignore[arg-type]
    ]
    scraped: list[bytes] = []
    scrape = threading.Thread(target=lambda: scraped.append(metrics.render()), daemon=True)
    scrape.start()
    scrape.join(30)  # a generous bound: before, the scrape waited for the store for good
    release.set()
    assert scraped, "the scrape waited on the store"
    assert b"shipml_ready 1.0" in scraped[0]
    assert store.reports.reads == store.experiments.reads == 0


def test_the_refresher_brings_a_newly_stored_report_to_the_gauges(tmp_path: Path) -> None:
    store = PredictionStore(f"sqlite:///{tmp_path}/p.db")
    collector = ReportCollector(store, "churn", lambda: True)
    refresher = ReportRefresher(collector, interval_s=0.05)
    refresher.start()
    try:
        store.reports.save(report(True))
        deadline = time.monotonic() + 60
        while collector.report() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert collector.report() == report(True)
    finally:
        refresher.stop()
        store.close()
