"""Issue 10's "done when", end to end with real processes: after quickstart, the example script's drifted
traffic makes `shipml monitor drift` flag the drifted features, /metrics of `shipml serve --workers 2` shows
them, a real Prometheus fires the drift alert with the shipped rules, and Alertmanager delivers it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from shipml.adapters.store import PredictionStore
from tests.support.browser import BACKGROUND, SIZE, colours, open_page
from tests.support.cli import one_error_line, shipml
from tests.support.project import train_project
from tests.support.prometheus import prometheus_stack
from tests.support.report import figures
from tests.support.server import Server, start_server

pytestmark = [pytest.mark.integration]

DEMO = Path(__file__).parents[2] / "examples" / "churn" / "monitor_demo.py"
DRIFTED = {"tenure", "monthly_charges", "contract"}  # what the demo changes
# the service's own schedule (monitor.interval_s), one runner across its two workers: on a server of the schedule's
# test only, as each run takes most of a second of CPU (drift, performance and the domain classifier over the window);
# that server skips the domain classifier (monitor.multivariate), which the drift test above runs
INTERVAL_S = 1
UNTOUCHED = {"age", "data_gb", "support_calls", "payment", "internet", "gender"}  # drawn as in training


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Server]]:
    root = tmp_path_factory.mktemp("monitoring")
    train_project(root, rows=4_000)
    server = start_server(root, "--workers", "2", env={"SHIPML_STORE__HISTOGRAM_FLUSH_S": "0.5"})
    try:
        demo = subprocess.run(
            [sys.executable, str(DEMO), "--url", server.url, "--normal", "500", "--drifted", "2500"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert demo.returncode == 0, demo.stderr
        time.sleep(1.5)  # each worker's writer writes its histograms' changed minutes every 0.5 s
        yield root, server
    finally:
        assert server.stop() == 0


def test_monitor_drift_flags_exactly_the_drifted_features(served: tuple[Path, Server]) -> None:
    root, _ = served
    run = shipml(root, "monitor", "drift", "--window", "1h", "--json")
    assert run.returncode == 1, run.stderr  # 1: drift
    report = json.loads(run.stdout)
    (segment,) = report["segments"]
    assert segment["rows"] == 3000
    verdicts: dict[str, set[str]] = {}
    for d in segment["drift"]:
        if d["decisive"]:
            verdicts.setdefault(d["feature"], set()).add(d["verdict"])
    flagged = {f for f, v in verdicts.items() if "drift" in v}
    assert flagged >= DRIFTED
    assert not flagged & UNTOUCHED
    assert segment["labels"]["labelled"] == 1500  # the demo labels 60 % of the drifted predictions
    assert {p["estimate"]["metric"] for p in segment["performance"]} >= {"accuracy", "roc_auc", "f1"}
    table = shipml(root, "monitor", "drift", "--window", "1h")
    assert table.returncode == 1 and "verdict: drift" in table.stdout


def scrape(server: Server) -> str:
    # a new connection per scrape: the two workers take turns accepting them
    return requests.get(f"{server.url}/metrics", headers={"Connection": "close"}, timeout=10).text


def gauge(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if line.startswith((name + "{", name + " ")) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_every_worker_shows_the_stored_report_and_prometheus_alerts(served: tuple[Path, Server]) -> None:
    root, server = served
    assert shipml(root, "monitor", "drift", "--window", "1h").returncode == 1
    time.sleep(1.5)  # past the collector's cache
    scrapes = [scrape(server) for _ in range(12)]
    for text in scrapes:
        for feature in DRIFTED:
            assert gauge(text, "shipml_drift_detected", feature=feature, statistic="psi", model="churn") is not None
        assert gauge(text, "shipml_drift_detected", feature="monthly_charges", statistic="psi") == 1.0
        assert gauge(text, "shipml_drift_detected", feature="age", statistic="psi") == 0.0
        assert gauge(text, "shipml_labels", state="labelled") == 1500.0
        assert gauge(text, "shipml_ready") == 1.0
        assert re.search(r"^shipml_monitor_last_success_timestamp_seconds\{model=\"churn\"\} ", text, re.M)
    # the same numbers from every scrape, whichever worker answered
    values = {tuple(sorted(line for line in t.splitlines() if line.startswith("shipml_drift_score"))) for t in scrapes}
    assert len(values) == 1
    promtool = shutil.which("promtool")
    if promtool is not None:  # Prometheus's own linter on a real scrape (the stack below skips without it)
        checked = subprocess.run([promtool, "check", "metrics"], input=scrapes[0], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stdout + checked.stderr

    target = server.url.removeprefix("http://")
    with prometheus_stack({"shipml": [target]}) as stack:
        prom, webhook = stack.prometheus, stack.webhook
        assert webhook is not None
        prom.wait_for_targets_up()
        firing = prom.wait_for_alert("ShipmlDriftDetected", "firing", {"feature": "monthly_charges"}, timeout=30)
        assert firing["labels"]["model"] == "churn" and firing["labels"]["severity"]
        sent = webhook.wait_for(
            lambda b: b.get("status") == "firing" and b["groupLabels"].get("alertname") == "ShipmlDriftDetected",
            timeout=30,
        )
        assert {a["labels"]["feature"] for a in sent["alerts"]} >= DRIFTED
        assert not UNTOUCHED & {a["labels"]["feature"] for a in sent["alerts"]}


def test_the_service_runs_the_job_on_its_schedule_in_one_worker_at_a_time(served: tuple[Path, Server]) -> None:
    root, _ = served
    store = PredictionStore(f"sqlite:///{root}/.shipml/predictions.db")

    def scheduled_since(t: float) -> list[float]:
        return [
            r.created_at for r in store.reports.recent("churn", limit=100)
            if r.created_at >= t and r.until - r.since == 86400  # the scheduled window (24h)
        ]  # fmt: skip

    started = time.time()
    env = {"SHIPML_MONITOR__INTERVAL_S": str(INTERVAL_S), "SHIPML_MONITOR__MULTIVARIATE": "false"}
    server = start_server(root, "--workers", "2", env=env)
    try:
        deadline = time.monotonic() + 60  # the first run loads the job's modules and the reference profile
        while not scheduled_since(started) and time.monotonic() < deadline:
            time.sleep(0.2)
        first = scheduled_since(started)
        assert first, "no scheduled run within 60 s of the service starting"
        counting = max(first)
        # the runs after the first, over at least five intervals (a run takes longer on a busy machine)
        deadline = time.monotonic() + 60
        time.sleep(5 * INTERVAL_S + 0.5)
        while len(runs := [t for t in scheduled_since(started) if t > counting]) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        span = time.time() - counting
        verdicts = {r.verdict for r in store.reports.recent("churn", limit=100) if r.created_at >= started}
    finally:
        assert server.stop() == 0
        store.close()
    # one runner: at most one run per interval (two workers without the lease would make about twice as many)
    assert 3 <= len(runs) <= span / INTERVAL_S + 1, ([t - counting for t in runs], span)
    assert verdicts == {"drift"}


def test_a_mistyped_window_is_one_error_line(served: tuple[Path, Server]) -> None:
    root, _ = served
    line = one_error_line(shipml(root, "monitor", "drift", "--window", "5x"))
    assert line.startswith("error: --window: expected a positive duration")


def test_the_report_page_shows_the_numbers_of_metrics(served: tuple[Path, Server]) -> None:
    root, server = served
    made = shipml(root, "monitor", "report", "--window", "1h", "-o", "page.html")
    assert made.returncode == 0, made.stderr
    page = (root / "page.html").read_text()
    assert len(page.encode()) < 2 * 1024 * 1024 and "https://" not in page
    on_page = {
        (f["feature"], f["statistic"]): float(f["value"]) for f in figures(page) if f["gauge"] == "shipml_drift_score"
    }
    time.sleep(1.5)  # past the collector's cache: /metrics shows the newest stored report
    text = scrape(server)
    on_metrics = {}
    for line in text.splitlines():
        found = re.match(r"shipml_drift_score\{(.*)\} (\S+)$", line)
        if found:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', found.group(1)))
            on_metrics[(labels["feature"], labels["statistic"])] = float(found.group(2))
    assert on_page and on_page.keys() == on_metrics.keys()
    for key, value in on_page.items():
        assert value == pytest.approx(on_metrics[key], rel=1e-9), key
    # and the page a person opens: headless Chromium renders it, with no console message, and not blank
    dom, console, png = open_page(root / "page.html", root)
    assert console == [] and "monthly_charges" in dom
    drawn = sum(n for c, n in colours(png).items() if c not in BACKGROUND)
    assert drawn > 0.05 * SIZE[0] * SIZE[1]
