"""The built-in notifier for teams without Prometheus: a monitoring report's verdict, to ``monitor.webhook_url``."""

from __future__ import annotations

from pathlib import Path

from shipml.adapters.notify import NotifyResult, VerdictChange, WebhookNotifier
from shipml.config import Settings
from shipml.core.monitor_report import DriftReport


def change_of(report: DriftReport, report_id: int | None) -> VerdictChange:
    """What a message says of ``report``: its verdict, the drifted features and one line per performance drop."""
    features = tuple(dict.fromkeys(f for s in report.segments for f in s.drifted))
    drops = tuple(
        f"version {s.version} ({s.variant}): {p.reason}" for s in report.segments for p in s.performance if p.dropped
    )
    return VerdictChange(
        model=report.model,
        previous=None,
        verdict=report.verdict,
        features=features,
        drops=drops,
        since=report.since,
        until=report.until,
        report_id=report_id,
        hint=f"shipml monitor report -m {report.model} -o report.html",
    )


def notify_change(settings: Settings, report: DriftReport, report_id: int | None) -> NotifyResult | None:
    """Send the report's verdict if it changed (the notifier keeps what it sent under ``home``); never raises."""
    url = settings.monitor.webhook_url
    if not url:
        return None
    notifier = WebhookNotifier(
        url, settings.monitor.webhook_cooldown_s, state_path=Path(settings.home) / "webhook_state.json"
    )
    return notifier.notify(change_of(report, report_id))
