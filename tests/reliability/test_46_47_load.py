"""Reliability catalogue, load (cases 46, 47): overload at twice capacity, 4 workers. The soak (case 45) is in
test_45_soak.py."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests

from tests.reliability.load import (
    figure,
    make_project,
    metric,
    move_production,
    predict_body,
    predict_load,
    wait_for_workers,
    worker_pids,
)
from tests.support.server import Keys, Server, auth, start_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Keys]:
    root = tmp_path_factory.mktemp("load")
    return root, make_project(root, "reload_interval_s: 1")


def _probe(server: Server, key: str) -> int:
    try:
        return requests.post(
            f"{server.url}/predict", data=predict_body(0),
            headers=auth(key) | {"Content-Type": "application/json"}, timeout=10,
        ).status_code  # fmt: skip
    except requests.RequestException:
        return 0


@pytest.mark.parametrize("durability", ["async", "commit"])
def test_case46_overload_at_twice_capacity(project: tuple[Path, Keys], durability: str) -> None:
    """The pipeline (no fast path) makes the service the bottleneck, not the load generator; a small
    in-flight bound (and, in async durability, a small log queue) turns the excess into fast 503s."""
    root, keys = project
    move_production(root, "1")
    timeout_s = 5.0
    env = {
        "SHIPML_STORE__URI": f"sqlite:///{root}/case46-{durability}.db",
        "SHIPML_STORE__DURABILITY": durability,
        "SHIPML_STORE__QUEUE_SIZE": "64",
        "SHIPML_SERVE__FAST_PATH": "false",
        "SHIPML_SERVE__MAX_IN_FLIGHT": "16",
        "SHIPML_SERVE__REQUEST_TIMEOUT_S": str(timeout_s),
    }
    server = start_server(root, env=env)
    try:
        capacity = predict_load(server, keys.predict, threads=8, duration_s=4).run()
        assert capacity.failed == []
        offered = 2 * capacity.rate
        over = predict_load(server, keys.predict, threads=48, rate=offered, duration_s=6, timeout_s=30).run()
        dropped = time.monotonic()
        recovered_s = None
        streak = 0
        while time.monotonic() - dropped < 30:
            streak = streak + 1 if _probe(server, keys.predict) == 200 else 0
            if streak == 20:
                recovered_s = time.monotonic() - dropped
                break
            time.sleep(0.05)
        after = predict_load(server, keys.predict, threads=4, duration_s=2).run()
        overloaded = metric(server, "shipml_overloaded_total")
        shed = metric(server, "shipml_load_shed_total")
        alive = server.proc.poll() is None
    finally:
        assert server.stop() == 0
    refused = [a for a in over.answers if a.status == 503]
    figure(
        46, durability=durability, capacity_rps=round(capacity.rate, 1), offered_rps=round(offered, 1),
        achieved_rps=round(over.rate, 1), statuses=over.statuses(),
        codes=sorted({a.error for a in over.failed}), p99_503_ms=over.p(0.99, 503), p99_200_ms=over.p(0.99, 200),
        max_ms=over.p(1.0, None), overloaded_total=overloaded, shed_total=shed,
        normal_after_s=None if recovered_s is None else round(recovered_s, 1), after=after.statuses(),
    )  # fmt: skip
    assert alive
    assert refused, "twice the capacity was answered without a single 503"
    assert set(over.statuses()) <= {200, 503}  # no connection errors, no 504, no 500
    assert {a.error for a in refused} <= {"overloaded"}
    assert over.p(1.0, None) < timeout_s * 1000  # nobody waited beyond the limit
    assert recovered_s is not None and recovered_s < 10
    assert after.failed == []


def test_case47_four_workers_metrics_equal_the_requests_sent(project: tuple[Path, Keys]) -> None:
    root, keys = project
    move_production(root, "1")
    server = start_server(root, "--workers", "4", env={"SHIPML_STORE__URI": f"sqlite:///{root}/case47.db"})
    try:
        wait_for_workers(server, 4)
        # forked from the master (server/workers.py), not fresh interpreters; their metrics still add up below
        master = Path(f"/proc/{server.proc.pid}/cmdline").read_bytes()
        assert [Path(f"/proc/{pid}/cmdline").read_bytes() == master for pid in worker_pids(server)] == [True] * 4
        before = {
            "predictions": metric(server, "shipml_predictions_total", status="ok"),
            "requests": metric(server, "shipml_requests_total", endpoint="/predict"),
            "latency_count": metric(server, "shipml_request_latency_seconds_count", endpoint="/predict"),
        }
        n = 400
        sent = predict_load(
            server, keys.predict, threads=4, max_requests=n, duration_s=60, new_connection_each=True
        ).run()
        # a worker records a request's latency just after it sent the answer: wait until the last one is in (at
        # most a few seconds; a count that never arrives fails the assertions below), then read every figure
        settle = time.monotonic() + 10
        while (
            metric(server, "shipml_request_latency_seconds_count", endpoint="/predict") < before["latency_count"] + n
            and time.monotonic() < settle
        ):
            time.sleep(0.1)
        text = requests.get(f"{server.url}/metrics", timeout=10).text
        after = {
            "predictions": metric(server, "shipml_predictions_total", status="ok"),
            "requests": metric(server, "shipml_requests_total", endpoint="/predict"),
            "latency_count": metric(server, "shipml_request_latency_seconds_count", endpoint="/predict"),
        }
    finally:
        assert server.stop() == 0
    buckets = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("shipml_request_latency_seconds_bucket") and 'endpoint="/predict"' in line
    ]
    delta = {k: after[k] - before[k] for k in after}
    figure(47, workers=4, sent=sent.sent, answered_200=sent.count(200), **{f"{k}_delta": v for k, v in delta.items()})
    assert sent.failed == [] and sent.sent == n
    assert delta == {"predictions": n, "requests": n, "latency_count": n}
    assert buckets == sorted(buckets) and buckets[-1] == after["latency_count"]
