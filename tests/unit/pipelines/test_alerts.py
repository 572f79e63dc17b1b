"""The webhook message of a stored report names its drifted features and performance drops, and is sent once."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from shipml.adapters.notify import VerdictChange
from shipml.adapters.store import PredictionStore
from shipml.config import MonitorSettings
from shipml.core.drift import FeatureDrift
from shipml.core.monitor_report import DriftReport, PerformanceEntry, SegmentReport
from shipml.core.performance import PerformanceEstimate
from shipml.pipelines.alerts import change_of, message, notify_change


def report(drifted: bool) -> DriftReport:
    def d(feature: str, verdict: str) -> FeatureDrift:
        return FeatureDrift(feature, "numeric", "psi", 0.3 if verdict == "drift" else 0.01, 0.1, 0.2, 500, verdict)  # type: ignore[arg-type]

    drift = (d("tenure", "drift" if drifted else "no_drift"), d("age", "no_drift"))
    estimate = PerformanceEstimate("accuracy", 0.6, 0.55, 0.65, 400, "realised")
    drop = PerformanceEntry(estimate, 0.77, True, "realised accuracy 0.6 is below holdout 0.77")
    segment = SegmentReport("3", "main", 500, "drift" if drifted else "no_drift", drift, performance=(drop,))
    return DriftReport("churn", 1000.0, 87400.0, 87401.0, (segment,))


def test_the_change_names_the_drifted_features_and_the_drops() -> None:
    change = change_of(report(True), 12)
    assert change.verdict == "drift" and change.features == ("tenure",) and change.report_id == 12
    assert change.drops == ("version 3 (main): realised accuracy 0.6 is below holdout 0.77",)
    assert "shipml monitor report" in change.hint


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    bodies: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hooks/secret-token", bodies
    server.shutdown()


def test_a_verdict_is_sent_once_and_what_was_sent_is_kept_in_the_store(
    tmp_path: Path, receiver: tuple[str, list[dict[str, Any]]]
) -> None:
    url, bodies = receiver
    store = PredictionStore(f"sqlite:///{tmp_path}/p.db")
    settings = MonitorSettings(webhook_url=url)
    assert notify_change(settings, store, report(True), 1) is not None
    notify_change(settings, store, report(True), 2)  # the same verdict again: not sent
    assert len(bodies) == 1 and bodies[0]["shipml"]["features"] == ["tenure"]
    assert store.notifications.last("churn") is not None
    assert notify_change(MonitorSettings(), store, report(False), 3) is None  # no URL: nothing to do
    assert not list(tmp_path.glob("*.json"))  # no state file of its own
    store.close()


def test_the_memory_of_what_was_sent_moves_with_the_monitoring_lease(
    tmp_path: Path, receiver: tuple[str, list[dict[str, Any]]]
) -> None:
    """L5: the job runs in whichever worker or replica holds the lease; each has its own home, but they share the
    store. Replica B, taking over from A, sends the recovery A's alarm calls for, and no second alarm."""
    url, bodies = receiver
    settings = MonitorSettings(webhook_url=url, webhook_cooldown_s=3600.0)
    replica_a = PredictionStore(f"sqlite:///{tmp_path}/p.db")
    replica_b = PredictionStore(f"sqlite:///{tmp_path}/p.db")  # another process's store on the same database

    assert notify_change(settings, replica_a, report(True), 1).sent  # type: ignore[union-attr]
    assert notify_change(settings, replica_b, report(False), 2).sent  # type: ignore[union-attr]
    assert notify_change(settings, replica_b, report(True), 3).suppressed == "cooldown"  # type: ignore[union-attr]

    assert [b["shipml"]["verdict"] for b in bodies] == ["drift", "no_drift"]
    replica_a.close()
    replica_b.close()


# the message

DAY = 86_400.0
NOW = 1_767_323_045.0  # 2026-01-02 03:04:05 UTC


def change(verdict: str = "drift", **kw: Any) -> VerdictChange:
    values: dict[str, Any] = {
        "model": "churn",
        "previous": "no_drift",
        "verdict": verdict,
        "features": ("tenure", "contract", "monthly_charges") if verdict == "drift" else (),
        "since": NOW - DAY,
        "until": NOW,
        "report_id": 42,
        "hint": "shipml monitor report --window 24h -o report.html",
    }
    values.update(kw)
    return VerdictChange(**values)


def test_message_is_slack_shaped_with_a_summary_details_and_a_machine_readable_object() -> None:
    body = message(change(), "no_drift", NOW)
    assert body["text"] == (
        "shipml: churn drift detected in 3 features (tenure, contract, monthly_charges) over the last 24h"
    )
    header, section, context = body["blocks"]
    assert header["type"] == "header" and header["text"]["type"] == "plain_text"
    assert "churn" in header["text"]["text"] and len(header["text"]["text"]) <= 150
    assert section["type"] == "section" and section["text"]["type"] == "mrkdwn"
    details = section["text"]["text"]
    for expected in ("tenure", "contract", "monthly_charges", "(was no_drift)", "#42", "2026-01-01 03:04 UTC"):
        assert expected in details
    assert context == {
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": "shipml monitor report --window 24h -o report.html"}],
    }
    assert body["shipml"] == {
        "model": "churn",
        "verdict": "drift",
        "previous": "no_drift",
        "features": ["tenure", "contract", "monthly_charges"],
        "drops": [],
        "since": NOW - DAY,
        "until": NOW,
        "report_id": 42,
    }


def test_recovery_says_back_to_no_drift_and_a_drop_is_named() -> None:
    first = message(change("drift", drops=("accuracy 0.71 vs holdout 0.80 (v3, a)",)), "no_drift", NOW)
    second = message(change("no_drift", previous="drift"), "drift", NOW)
    assert "performance dropped: accuracy 0.71 vs holdout 0.80 (v3, a)" in first["text"]
    assert first["shipml"]["drops"] == ["accuracy 0.71 vs holdout 0.80 (v3, a)"]
    assert "accuracy 0.71" in first["blocks"][1]["text"]["text"]
    assert second["text"] == "shipml: churn back to no_drift over the last 24h"
    assert second["shipml"]["previous"] == "drift"


def test_a_past_window_is_named_by_its_end_and_many_features_are_shortened() -> None:
    features = tuple(f"f{i}" for i in range(8))
    body = message(change(features=features, since=NOW - 3600.0), "no_drift", NOW + 3 * DAY)
    assert body["text"] == (
        "shipml: churn drift detected in 8 features (f0, f1, f2, f3, f4, +3 more) over 1h ending 2026-01-02 03:04 UTC"
    )
    assert body["shipml"]["features"] == list(features)


def test_slack_markup_in_names_is_escaped_so_nobody_gets_pinged() -> None:
    body = message(change(features=("<!channel>", "a&b")), "no_drift", NOW)
    for text in (body["text"], body["blocks"][1]["text"]["text"]):
        assert "<!channel>" not in text
        assert "&lt;!channel&gt;" in text and "a&amp;b" in text
    assert body["shipml"]["features"] == ["<!channel>", "a&b"]  # the machine-readable part is raw
