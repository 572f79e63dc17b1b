"""The webhook message of a stored report names its drifted features and performance drops, and is sent once."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from shipml.config import Settings
from shipml.core.drift import FeatureDrift
from shipml.core.monitor_report import DriftReport, PerformanceEntry, SegmentReport
from shipml.core.performance import PerformanceEstimate
from shipml.pipelines.alerts import change_of, notify_change


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


def test_a_verdict_is_sent_once_and_state_is_kept_in_home(
    tmp_path: Path, receiver: tuple[str, list[dict[str, Any]]]
) -> None:
    url, bodies = receiver
    settings = Settings(home=str(tmp_path), monitor={"webhook_url": url})
    assert notify_change(settings, report(True), 1) is not None
    notify_change(settings, report(True), 2)  # the same verdict again: not sent
    assert len(bodies) == 1 and bodies[0]["shipml"]["features"] == ["tenure"]
    assert (tmp_path / "webhook_state.json").is_file()
    assert notify_change(Settings(home=str(tmp_path)), report(False), 3) is None  # no URL: nothing to do
