"""Issue 11 item 6 against real processes: `shipml deploy canary` drives a candidate through a running service.

A candidate that fails 5 % of its calls (tests/integration/failing_models.py, installed in the server process) is
rolled back, with the registry untouched; a healthy one reaches 100 % on every worker and is promoted, `previous`
kept. The canary's state is in the store: the service follows it, exposes it as gauges, and a worker started while a
canary runs serves it too."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
import yaml

from shipml.adapters.store import PredictionStore
from shipml.examples.churn import churn_config
from tests.support.cli import one_error_line, shipml
from tests.support.failing_models import site_dir
from tests.support.project import SMALL_FOREST, train_project
from tests.support.server import Server, records, start_server

pytestmark = [pytest.mark.integration]

ROOT = Path(__file__).parents[2]
SERVE = """
serve:
  reload_interval_s: 1
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Version 1 in production (the quickstart), version 2 trained beside it with another seed."""
    root = tmp_path_factory.mktemp("canary")
    train_project(root)
    config = yaml.safe_load(churn_config())
    config["training"] = {**config.get("training", {}), "seed": 7, "cv_folds": 2}
    config["model"]["params"] = {**config["model"]["params"], **SMALL_FOREST}  # as version 1's: trained in seconds
    (root / "candidate.yaml").write_text(yaml.safe_dump(config))
    trained = shipml(root, "train", "--config", "candidate.yaml", timeout=600)
    assert trained.returncode in (0, 1), trained.stderr  # 1: a quality gate missed, still registered
    (root / "shipml.yaml").write_text(yaml.safe_dump({**yaml.safe_load(churn_config()), **yaml.safe_load(SERVE)}))
    return root


def aliases(root: Path) -> dict[str, str]:
    """production and previous of model churn, as `shipml models show` prints them."""
    found = {}
    for alias in ("production", "previous"):
        shown = shipml(root, "models", "show", f"churn@{alias}")
        if shown.returncode == 0:
            found[alias] = re.search(r"churn/(\d+)", shown.stdout).group(1)  # type: ignore[union-attr]
    return found


@contextmanager
def traffic(server: Server, rate: float = 150.0, threads: int = 1) -> Iterator[Counter[tuple[str, int]]]:
    """Keyed single-record requests at about ``rate`` per second in all, from ``threads`` clients, until the block
    ends: (variant, status) counts."""
    seen: Counter[tuple[str, int]] = Counter()
    lock = threading.Lock()
    stop = threading.Event()
    rows = records(200)

    def send(first: int) -> None:
        with requests.Session() as session:
            i = first
            while not stop.is_set():
                started = time.monotonic()
                body = {"features": rows[i % 200], "id": f"customer-{i}"}
                try:
                    answer = session.post(f"{server.url}/predict", json=body, timeout=10)
                    variant = answer.json().get("model", {}).get("variant", "-") if answer.ok else "-"
                    outcome = (variant, answer.status_code)
                except requests.RequestException:
                    outcome = ("-", 0)
                with lock:
                    seen[outcome] += 1
                i += threads
                time.sleep(max(0.0, threads / rate - (time.monotonic() - started)))

    clients = [threading.Thread(target=send, args=(k,), daemon=True) for k in range(threads)]
    for client in clients:
        client.start()
    try:
        yield seen
    finally:
        stop.set()
        for client in clients:
            client.join(timeout=15)


def canary(root: Path, version: str, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return shipml(root, "deploy", "canary", "churn", version, *args, timeout=timeout)


def served_variants(server: Server) -> list[tuple[str, str, float]]:
    body = requests.get(f"{server.url}/model", timeout=10).json()
    return [(v["variant"], v["version"], v["weight"]) for v in body.get("variants", [])]


def gauge(server: Server, name: str, **labels: str) -> float | None:
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def wait_for(what: str, condition: object, timeout: float = 60) -> None:
    """Poll ``condition`` until it holds. The deadline is generous: a worker polls the canary every 2 s, but on a
    machine whose cores the rest of the suite shares, loading the candidate in each worker, or a poll behind a
    busy SQLite store, can take tens of seconds (how fast the controller decides is asserted by its exit code)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_candidate_failing_5_percent_of_its_requests_is_rolled_back_and_the_registry_is_untouched(
    project: Path,
) -> None:
    site = site_dir(project)
    env = {
        "SHIPML_AUTH__ENABLED": "false",
        "SHIPML_TEST_FAILING": "churn/2=0.05",
        "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]),
    }
    server = start_server(project, env=env)
    try:
        before = aliases(project)
        with traffic(server) as seen:
            done = canary(project, "2", "--steps", "50,100", "--interval", "3s", "--min-requests", "20",
                          "--check-every", "0.5s")  # fmt: skip
            assert done.returncode == 1, done.stdout + done.stderr
            wait_for(
                "the canary to leave the split", lambda: "canary" not in [v for v, _, _ in served_variants(server)]
            )
            time.sleep(1.0)
            after_rollback = Counter(seen)
            time.sleep(2.0)
        served = sum(n for (v, _), n in after_rollback.items() if v == "canary")
        failed = after_rollback[("-", 500)]
        reached = re.findall(r"[(]step \d+/\d+, (\d+) %[)]", done.stdout)
        print(
            f"FIGURE canary rollback: candidate failing 5 % rolled back after {served} answered and {failed} failed "
            f"request(s); steps reached: {reached}"
        )
        assert "rolled_back" in done.stdout and "error_rate" in done.stdout, done.stdout
        assert "advanced" not in done.stdout and "100 %" not in done.stdout.split("rolled_back")[0].split("started")[1]
        assert aliases(project) == before  # production is still version 1, nothing moved
        assert seen[("canary", 200)] > 0 and seen[("-", 500)] > 0  # it served, and its failures reached clients
        assert sum(n for (v, _), n in seen.items() if v == "canary") == sum(
            n for (v, _), n in after_rollback.items() if v == "canary"
        )  # after the rollback no request went to the candidate
        assert gauge(server, "shipml_canary_state", candidate="2", state="rolled_back") == 1.0
        assert gauge(server, "shipml_canary_weight", candidate="2") == 0.0
        status = shipml(project, "deploy", "status", "churn", "--events")
        assert status.returncode == 0 and "rolled_back" in status.stdout and "started" in status.stdout
        store = PredictionStore(f"sqlite:///{project}/.shipml/predictions.db")
        try:
            assert store.predictions.count("churn", variant="canary", status="error") > 0  # its failures are in the log
        finally:
            store.close()
    finally:
        assert server.stop() == 0


def test_a_healthy_candidate_reaches_100_percent_on_every_worker_and_is_promoted(project: Path) -> None:
    """Version 2 again, served without the failing wrapper: rolled back once, it can be tried again."""
    steps = ("--steps", "20,50,100", "--interval", "2s", "--min-requests", "20", "--check-every", "0.5s")
    before = aliases(project)
    started = canary(project, "2", *steps, "--detach")  # the state is in the store before any server runs
    assert started.returncode == 3 and "started" in started.stdout, started.stdout + started.stderr
    line = one_error_line(canary(project, "1", "--interval", "1m"))  # one canary at a time, said in one line
    assert "a canary of churn is active" in line and "shipml deploy abort churn" in line
    server = start_server(project, "--workers", "2", env={"SHIPML_AUTH__ENABLED": "false"})
    try:
        # a service started while the canary runs serves it from its first poll, in every worker
        wait_for("the new server to serve the canary", lambda: ("canary", "2", 0.2) in served_variants(server))
        # the steps hold until the candidate's guardrails are shown within their margins: a thousand and more of
        # its requests, collected sooner at a higher rate
        with traffic(server, rate=400.0, threads=3) as seen:
            follow = canary(project, "2", *steps)  # the same canary again: followed, driven to its end
            assert follow.returncode == 0, follow.stdout + follow.stderr
            wait_for("the canary to leave", lambda: [v for v, _, _ in served_variants(server)] == [])
            time.sleep(1.0)
        out = follow.stdout
        reached = re.findall(r"(\d+) %\)", out)
        print(
            f"FIGURE canary promotion: healthy candidate through steps {reached} with {seen[('canary', 200)]} "
            f"request(s) to it and {seen[('-', 500)]} failure(s)"
        )
        assert out.startswith("following") and "promoted" in out and "50" in reached, out
        after = aliases(project)
        assert after["production"] == "2" and after["previous"] == before["production"]
        assert seen[("canary", 200)] > 0 and seen[("-", 500)] == 0
        versions = {requests.post(f"{server.url}/predict", json={"features": records(1)[0]}, timeout=10).json()
                    ["model"]["version"] for _ in range(40)}  # fmt: skip
        assert versions == {"2"}  # every worker serves the promoted version, as main
        assert gauge(server, "shipml_canary_state", candidate="2", state="promoted") == 1.0
    finally:
        assert server.stop() == 0


def test_bad_canaries_are_one_line_errors(project: Path) -> None:
    assert "--steps" in one_error_line(canary(project, "2", "--steps", "5,1,100"))
    assert "--interval" in one_error_line(canary(project, "2", "--interval", "soon"))
    assert "99" in one_error_line(canary(project, "99"))
    assert "no active canary" in one_error_line(shipml(project, "deploy", "abort", "churn"))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
