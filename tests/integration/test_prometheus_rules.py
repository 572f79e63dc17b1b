"""The shipped alerting rules, runbook and example configs, checked by the real tools and a real Prometheus.

- promtool checks and unit-tests deploy/prometheus/rules.yml (rules_test.yml), and checks prometheus.yml;
  amtool checks alertmanager.yml;
- every alert has a runbook section, the mixin annotations and labels, and a firing and a not-firing case;
- a real Prometheus evaluates the shipped rules (with `for`/`keep_firing_for` cut to 3 s, see
  tests/integration/prometheus.py) against a stand-in exporter, and the drift alert goes pending, firing,
  reaches the webhook through Alertmanager with the shipped routing, and resolves.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.markdown import github_anchor
from tests.support.prometheus import (
    ALERTMANAGER_CONFIG,
    PROMETHEUS_CONFIG,
    RULES,
    RULES_TEST,
    binary,
    prometheus_stack,
)

pytestmark = [pytest.mark.integration]

RUNBOOK = Path(__file__).parents[2] / "docs" / "runbook.md"
RUNBOOK_BASE = "https://github.com/shipml/shipml/blob/main/docs/runbook.md#"
EXPECTED_ALERTS = {
    "ShipmlDriftDetected",
    "ShipmlRealisedPerformanceDrop",
    "ShipmlEstimatedPerformanceDrop",
    "ShipmlHighErrorRate",
    "ShipmlHighLatencyP99",
    "ShipmlModelLoadFailures",
    "ShipmlNotReady",
    "ShipmlPredictionLogFailing",
    "ShipmlPredictionLogShedding",
    "ShipmlStoreRowsWithoutPartition",
    "ShipmlMonitorStale",
    "ShipmlExperimentSampleRatioMismatch",
    "ShipmlExperimentNoTraffic",
    "ShipmlCanaryRolledBack",
    "ShipmlRoutingMismatch",
}


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def alert_rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule]


# ---------------------------------------------------------------- (a) promtool on the rules


def test_promtool_check_rules() -> None:
    checked = run(binary("promtool"), "check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in checked.stdout


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    tested = run(binary("promtool"), "test", "rules", str(RULES_TEST))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


# ---------------------------------------------------------------- (b) every alert documented and tested


def test_every_alert_follows_the_mixin_conventions() -> None:
    rules = alert_rules()
    assert {r["alert"] for r in rules} == EXPECTED_ALERTS
    assert sum(len(re.findall(r"\bby\s*\(", r["expr"])) for r in rules) >= 8  # the check below does look
    for rule in rules:
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert "for" in rule and "keep_firing_for" in rule, name
        notes = rule["annotations"]
        assert set(notes) == {"summary", "description", "runbook_url"}, name
        if not rule["expr"].lstrip().startswith("absent("):  # absent() has no labels to show
            assert "{{ $labels." in notes["description"], name
        assert notes["runbook_url"] == RUNBOOK_BASE + name.lower(), name
        # aggregations keep no per-process or per-record label: one alert per model, not per worker
        for labels in re.findall(r"\bby\s*\(([^)]*)\)", rule["expr"]):
            kept = {label.strip() for label in labels.split(",")}
            assert not kept & {"instance", "pid", "id", "prediction_id", "request_id"}, (name, kept)


def test_every_alert_has_a_runbook_section_and_no_section_is_orphaned() -> None:
    headings = re.findall(r"^## (.+)$", RUNBOOK.read_text(), flags=re.MULTILINE)
    anchors = {github_anchor(h) for h in headings}
    alerts = {r["alert"] for r in alert_rules()}
    assert anchors == {a.lower() for a in alerts}
    for rule in alert_rules():
        assert rule["annotations"]["runbook_url"].split("#", 1)[1] in anchors


def test_every_alert_has_a_firing_and_a_not_firing_case() -> None:
    doc = yaml.safe_load(RULES_TEST.read_text())
    assert doc["rule_files"] == [RULES.name]
    firing: set[str] = set()
    quiet: set[str] = set()
    for group in doc["tests"]:
        assert group["input_series"], group.get("name")
        for case in group.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    alerts = {r["alert"] for r in alert_rules()}
    assert alerts - firing == set(), "alerts without a firing case"
    assert alerts - quiet == set(), "alerts without a not-firing case (exp_alerts: [])"
    # an alert with two rules (told apart by `cause`) has a firing case for each
    for name in ("ShipmlNotReady", "ShipmlMonitorStale"):
        causes = {
            alert["exp_labels"].get("cause")
            for group in doc["tests"]
            for case in group.get("alert_rule_test", [])
            if case["alertname"] == name
            for alert in case.get("exp_alerts") or []
        }
        assert causes == {r["labels"]["cause"] for r in alert_rules() if r["alert"] == name}, name


# ---------------------------------------------------------------- (c) the example configs


def test_example_prometheus_config_is_valid() -> None:
    checked = run(binary("promtool"), "check", "config", str(PROMETHEUS_CONFIG))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 1 rule files found" in checked.stdout


def test_example_alertmanager_config_is_valid() -> None:
    checked = run(binary("amtool"), "check-config", str(ALERTMANAGER_CONFIG))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS" in checked.stdout


# ---------------------------------------------------------------- (d) a real Prometheus and Alertmanager

DRIFT_LABELS = 'model="churn",version="3",variant="main",feature="tenure",statistic="psi"'


class _Exporter(ThreadingHTTPServer):
    """A stand-in for `shipml serve`'s /metrics: a healthy, fresh service whose drift flag can be flipped."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ExporterHandler)
        self.drifted = False

    def body(self) -> bytes:
        flag, score = (1, 0.31) if self.drifted else (0, 0.04)
        return (
            "# TYPE shipml_drift_detected gauge\n"
            f"shipml_drift_detected{{{DRIFT_LABELS}}} {flag}\n"
            "# TYPE shipml_drift_score gauge\n"
            f"shipml_drift_score{{{DRIFT_LABELS}}} {score}\n"
            "# TYPE shipml_ready gauge\n"
            "shipml_ready 1\n"
            "# TYPE shipml_monitor_last_success_timestamp_seconds gauge\n"
            f'shipml_monitor_last_success_timestamp_seconds{{model="churn"}} {time.time():.3f}\n'
        ).encode()


class _ExporterHandler(BaseHTTPRequestHandler):
    server: _Exporter

    def do_GET(self) -> None:
        body = self.server.body()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def exporter() -> Iterator[_Exporter]:
    server = _Exporter()
    threading.Thread(target=server.serve_forever, name="exporter", daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
def test_drift_alert_goes_pending_then_firing_and_reaches_the_webhook(exporter: _Exporter) -> None:
    target = f"127.0.0.1:{exporter.server_address[1]}"
    with prometheus_stack({"shipml": [target]}) as stack:
        prom, webhook = stack.prometheus, stack.webhook
        assert webhook is not None
        prom.wait_for_targets_up()

        # every shipped rule loaded and evaluated on the real server without an error
        def evaluated() -> list[dict[str, Any]] | None:
            rules = [rule for group in prom.rules() for rule in group["rules"]]
            return rules if rules and all(r["health"] == "ok" for r in rules) else None

        rules = prom.wait_for("every rule evaluated", evaluated, timeout=15)
        assert {r["name"] for r in rules} == EXPECTED_ALERTS
        # a healthy service with fresh monitoring and no drift: nothing even pending
        assert prom.alerts() == []

        exporter.drifted = True
        pending = prom.wait_for_alert("ShipmlDriftDetected", "pending", {"feature": "tenure"})
        firing = prom.wait_for_alert("ShipmlDriftDetected", "firing", {"feature": "tenure"})
        assert pending["activeAt"] == firing["activeAt"]
        assert firing["labels"] == {
            "alertname": "ShipmlDriftDetected",
            "severity": "warning",
            "model": "churn",
            "version": "3",
            "variant": "main",
            "feature": "tenure",
            "statistic": "psi",
        }
        assert "psi = 0.31" in firing["annotations"]["description"]
        assert {a["labels"]["alertname"] for a in prom.alerts()} == {"ShipmlDriftDetected"}

        sent = webhook.wait_for(
            lambda b: b.get("status") == "firing" and b["groupLabels"].get("alertname") == "ShipmlDriftDetected"
        )
        assert sent["groupLabels"] == {"alertname": "ShipmlDriftDetected", "model": "churn"}
        assert sent["commonLabels"]["severity"] == "warning"
        assert sent["commonAnnotations"]["runbook_url"] == RUNBOOK_BASE + "shipmldriftdetected"
        assert [a["labels"]["feature"] for a in sent["alerts"]] == ["tenure"]

        # the verdict clears: the alert resolves after keep_firing_for and Alertmanager says so
        exporter.drifted = False
        prom.wait_for_no_alert("ShipmlDriftDetected")
        resolved = webhook.wait_for(
            lambda b: b.get("status") == "resolved" and b["groupLabels"].get("alertname") == "ShipmlDriftDetected"
        )
        assert resolved["alerts"][0]["labels"]["feature"] == "tenure"
