"""A command's workspace opens the store exactly as the service does, and one run of monitoring stores its report
and tells the webhook, whoever runs it (the CLI or the service's schedule)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shipml.adapters.store import PredictionStore
from shipml.config import Settings
from shipml.core.monitor_report import DriftReport
from shipml.core.window import Window
from shipml.pipelines.monitor import MonitorJob, run_monitoring
from shipml.pipelines.workspace import Workspace
from tests.unit.pipelines.test_alerts import receiver, report

__all__ = ["receiver"]  # the webhook receiver fixture


def settings(tmp_path: Path, **monitor: Any) -> Settings:
    return Settings(
        home=str(tmp_path / "home"),
        store={"uri": f"sqlite:///{tmp_path}/p.db", "sqlite_synchronous": "NORMAL", "histogram_flush_s": 42.0},
        registry={"uri": f"sqlite:///{tmp_path}/mlflow.db", "artifact_root": str(tmp_path / "artifacts")},
        monitor=monitor,
    )


def test_a_command_opens_the_store_with_the_services_store_settings(tmp_path: Path) -> None:
    with Workspace.open(settings(tmp_path)) as ws:
        with ws.store.database.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar_one() == 1  # NORMAL, not the default FULL
        assert ws.store.histograms.keeper.flush_s == 42.0
        assert ws.cache_dir == tmp_path / "home" / "cache"


class _Drifting(MonitorJob):
    """The monitoring job finding drift (its checks are tested in test_monitor*): stores what it found."""

    def run(
        self, model: str, window: Window, *, recompute: bool = False, save: bool = True
    ) -> tuple[DriftReport, int | None]:
        found = report(True)
        return found, self.store.reports.save(found) if save else None


def test_one_run_of_monitoring_stores_the_report_and_tells_the_webhook(
    tmp_path: Path, receiver: tuple[str, list[dict[str, Any]]]
) -> None:
    url, bodies = receiver
    s = settings(tmp_path, webhook_url=url)
    store = PredictionStore.open(s.store)
    ws = Workspace(s, store, None)  # type: ignore[arg-type]  # the job here reads no registry
    job = _Drifting.of(ws)

    found, report_id = run_monitoring(ws, "churn", Window(1000.0, 87400.0), job=job)

    assert store.reports.latest("churn") == found and report_id is not None
    assert [b["shipml"]["verdict"] for b in bodies] == ["drift"]
    store.close()
