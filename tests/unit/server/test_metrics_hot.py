"""The request path's counters and histograms in multiprocess mode are written in place (server/metrics.py's
HotCounter and HotHistogram): what a scrape reads is exactly what prometheus-client's own calls would have
written, whichever of the two wrote a key, and the sums over two workers' files are exact."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from prometheus_client import values

from shipml.server.metrics import HotCounter, HotHistogram, ServerMetrics


@pytest.fixture
def multiprocess(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue(lambda: 101))
    return tmp_path


def samples(text: str, name: str) -> dict[str, float]:
    return {labels: float(v) for labels, v in re.findall(rf"^{name}\{{([^}}]*)\}} (\S+)$", text, re.M)}


def use(m: ServerMetrics) -> ServerMetrics:
    requests = m.child(m.requests, "/predict", "200")
    latency = m.child(m.latency, "/predict")
    for amount in (0.0001, 0.0005, 0.0007, 0.003, 0.003, 2.5, 7.0):
        requests.inc()
        latency.observe(amount)
    m.child(m.predictions, "churn", "1", "main", "ok").inc(5)
    return m


def test_hot_children_write_what_prometheus_client_would(multiprocess: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hot = use(ServerMetrics(str(multiprocess)))
    assert isinstance(hot.child(hot.requests, "/predict", "200"), HotCounter)
    assert isinstance(hot.child(hot.latency, "/predict"), HotHistogram)
    monkeypatch.setattr(values, "ValueClass", values.MutexValue)  # one process, prometheus-client's own values
    plain = use(ServerMetrics(None))
    assert not isinstance(plain.child(plain.requests, "/predict", "200"), HotCounter)
    got, want = hot.render().decode(), plain.render().decode()
    for name in ("shipml_requests_total", "shipml_predictions_total", "shipml_request_latency_seconds_bucket",
                 "shipml_request_latency_seconds_count", "shipml_request_latency_seconds_sum"):  # fmt: skip
        assert samples(got, name) == pytest.approx(samples(want, name)), name
    assert samples(got, "shipml_requests_total") == {'endpoint="/predict",status="200"': 7.0}
    assert samples(got, "shipml_request_latency_seconds_bucket")['endpoint="/predict",le="0.0005"'] == 2.0


def test_a_key_written_both_ways_keeps_one_total(multiprocess: Path) -> None:
    m = ServerMetrics(str(multiprocess))
    m.child(m.predictions, "churn", "1", "main", "ok").inc(3)
    m.predictions.labels("churn", "1", "main", "ok").inc(2)  # prometheus-client's own path, same value object
    m.child(m.predictions, "churn", "1", "main", "ok").inc()
    total = samples(m.render().decode(), "shipml_predictions_total")
    assert list(total.values()) == [6.0]


def test_two_workers_files_sum_exactly(multiprocess: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = ServerMetrics(str(multiprocess))
    for _ in range(1000):
        first.child(first.requests, "/predict", "200").inc()
    monkeypatch.setattr(values, "ValueClass", values.MultiProcessValue(lambda: 202))  # another worker's file
    second = ServerMetrics(str(multiprocess))
    for _ in range(234):
        second.child(second.requests, "/predict", "200").inc()
        second.child(second.latency, "/predict").observe(0.001)
    text = first.render().decode()
    assert samples(text, "shipml_requests_total") == {'endpoint="/predict",status="200"': 1234.0}
    assert samples(text, "shipml_request_latency_seconds_count") == {'endpoint="/predict"': 234.0}
    assert len(list(multiprocess.glob("counter_*.db"))) == 2
