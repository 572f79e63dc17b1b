"""Reliability catalogue, load (cases 45-47): soak with alias flips, overload at twice capacity, 4 workers.

The catalogue's soak is 200 req/s single rows plus 20 batches/s of 100 for 30 min (5 in CI). On a 2-core
machine shared with the load generator that rate is not reachable while other work runs, so the rates
here are scaled down and the achieved rate is printed. The duration is SHIPML_SOAK_SECONDS (read at import:
the test fixtures clear SHIPML_* variables), 60 s when unset; `make soak` sets it.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

import pytest
import requests

from tests.reliability.load import (
    Load,
    batch_body,
    figure,
    make_project,
    metric,
    move_production,
    predict_body,
    predict_load,
    proc_figures,
    store_count,
    train,
    wait_for_workers,
)
from tests.support.server import Keys, Server, auth, start_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SOAK_S = float(os.environ.get("SHIPML_SOAK_SECONDS") or 60)
SOAK_SINGLE_RATE = float(os.environ.get("SHIPML_SOAK_RATE") or 100)  # single-row requests/s
SOAK_BATCH_RATE = float(os.environ.get("SHIPML_SOAK_BATCH_RATE") or 4)  # batches of 100/s
FLIP_EVERY_S = 20.0


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Keys]:
    root = tmp_path_factory.mktemp("load")
    keys = make_project(root, "reload_interval_s: 1")
    assert train(root) == "2"
    return root, keys


@pytest.mark.soak
def test_case45_soak_with_an_alias_flip_every_20_s(project: tuple[Path, Keys]) -> None:
    root, keys = project
    move_production(root, "1")
    uri = f"sqlite:///{root}/case45.db"
    server = start_server(root, env={"SHIPML_STORE__URI": uri})
    pid = server.proc.pid  # one worker: uvicorn serves in this process
    try:
        singles = predict_load(server, keys.predict, threads=3, rate=SOAK_SINGLE_RATE, duration_s=SOAK_S).start()
        batches = Load(
            server.url, lambda i: ("POST", "/predict/batch", batch_body(i)), auth(keys.predict),
            threads=1, rate=SOAK_BATCH_RATE, duration_s=SOAK_S,
        ).start()  # fmt: skip
        started = time.monotonic()
        warm_up_s = min(30.0, SOAK_S / 4)
        baseline = None
        samples = []
        next_flip = started + FLIP_EVERY_S
        flips = 0
        version = "1"
        while time.monotonic() - started < SOAK_S:
            time.sleep(1.0)
            now = time.monotonic()
            if now >= next_flip:
                version = "2" if version == "1" else "1"
                move_production(root, version)
                flips += 1
                next_flip += FLIP_EVERY_S
            if baseline is None and now - started >= warm_up_s:
                baseline = proc_figures(pid)
            elif baseline is not None and int(now - started) % 5 == 0:
                samples.append(proc_figures(pid))
        result_s, result_b = singles.wait(), batches.wait()
        time.sleep(1.0)
        end = proc_figures(pid)
        samples.append(end)
    finally:
        move_production(root, "1")
        assert server.stop() == 0
    assert baseline is not None
    answers = result_s.answers + result_b.answers
    ok_predictions = len(result_s.acknowledged_ids()) + len(result_b.acknowledged_ids())
    rows = store_count(root, uri)
    rss_growth = (max(s.rss_kb for s in samples) - baseline.rss_kb) / baseline.rss_kb
    t = [baseline.threads] + [s.threads for s in samples]
    half = len(t) // 2
    figure(
        45, seconds=round(SOAK_S), flips=flips, single_rate=round(result_s.rate, 1),
        batch_rate=round(result_b.rate, 2), errors=sum(1 for a in answers if a.status != 200),
        p99_single_ms=result_s.p(0.99), p99_batch_ms=result_b.p(0.99),
        rss_kb_after_warmup=baseline.rss_kb, rss_kb_max=max(s.rss_kb for s in samples),
        rss_growth_pct=round(100 * rss_growth, 1), fds=f"{baseline.fds}->{max(s.fds for s in samples)}",
        threads=t,
        log_rows=rows, successful_predictions=ok_predictions,
    )  # fmt: skip
    assert [a for a in answers if a.status != 200] == []
    assert sum(a.failed_records for a in result_b.answers) == 0
    assert flips >= int(SOAK_S // FLIP_EVERY_S) - 1
    assert rss_growth < 0.10
    # flat: the client connections (4) and the store's files are open the whole run; nothing accumulates
    assert max(s.fds for s in samples) <= baseline.fds + 2
    # the worker-thread pool grows for a reload and its idle threads exit 10 s later: compare the halves
    # of the run (medians), so a pool that breathes passes and one that accumulates threads does not
    assert statistics.median(t[half:]) <= statistics.median(t[:half]) + 2
    assert rows == ok_predictions


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
        before = {
            "predictions": metric(server, "shipml_predictions_total", status="ok"),
            "requests": metric(server, "shipml_requests_total", endpoint="/predict"),
            "latency_count": metric(server, "shipml_request_latency_seconds_count", endpoint="/predict"),
        }
        n = 400
        sent = predict_load(
            server, keys.predict, threads=4, max_requests=n, duration_s=60, new_connection_each=True
        ).run()
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
