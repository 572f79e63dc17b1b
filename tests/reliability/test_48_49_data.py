"""Reliability catalogue, data (cases 48-49): the prediction log across restarts and crashes, feedback rules."""

from __future__ import annotations

import json
import signal
import time
import uuid
from pathlib import Path

import pytest
import requests

from shipml.core.ids import Uuid7Generator
from tests.reliability.load import (
    Load,
    batch_body,
    feedback_labels,
    figure,
    make_project,
    predict_load,
    store_count,
    store_rows,
    wait_for_workers,
)
from tests.support.server import Keys, Server, auth, start_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Keys]:
    root = tmp_path_factory.mktemp("data")
    return root, make_project(root, "reload_interval_s: 0")


def _load(server: Server, key: str, seconds: float) -> tuple[Load, Load]:
    singles = predict_load(server, key, threads=3, rate=120, duration_s=seconds).start()
    batches = Load(
        server.url, lambda i: ("POST", "/predict/batch", batch_body(i, 50)), auth(key),
        threads=1, rate=4, duration_s=seconds,
    ).start()  # fmt: skip
    return singles, batches


@pytest.mark.parametrize("durability", ["commit", "async"])
def test_case48_graceful_restart_logs_exactly_the_accepted_predictions(
    project: tuple[Path, Keys], durability: str
) -> None:
    root, keys = project
    uri = f"sqlite:///{root}/case48-{durability}.db"
    env = {"SHIPML_STORE__URI": uri, "SHIPML_STORE__DURABILITY": durability}
    accepted: list[str] = []
    for run in range(2):  # stop gracefully under load, start again on the same store, once more
        server = start_server(root, env=env)
        singles, batches = _load(server, keys.predict, 30)
        time.sleep(3)
        assert server.stop(signal.SIGTERM) == 0  # while requests are arriving
        for load in (singles.stop(), batches.stop()):
            # the requests after the stop are refused (connection errors), never half-answered
            assert all(a.status in (0, 200) for a in load.answers), load.statuses()
            accepted += load.acknowledged_ids()
        figure(48, durability=durability, run=run, accepted=len(accepted), rows=store_count(root, uri))
    stored = store_rows(root, accepted, uri)
    assert len(set(accepted)) == len(accepted)
    assert len(stored) == len(accepted)
    assert store_count(root, uri) == len(accepted)  # exactly K rows for K accepted requests


@pytest.mark.parametrize("durability", ["commit", "async"])
def test_case48_a_crash_loses_at_most_the_unacknowledged_buffer(project: tuple[Path, Keys], durability: str) -> None:
    """commit: nothing acknowledged is lost. async: at most store.queue_size rows, the documented buffer."""
    root, keys = project
    uri = f"sqlite:///{root}/case48-crash-{durability}.db"
    queue_size = 2000
    env = {
        "SHIPML_STORE__URI": uri, "SHIPML_STORE__DURABILITY": durability,
        "SHIPML_STORE__QUEUE_SIZE": str(queue_size),
    }  # fmt: skip
    server = start_server(root, env=env)
    singles, batches = _load(server, keys.predict, 30)
    time.sleep(3)
    server.stop(signal.SIGKILL)
    accepted = singles.stop().acknowledged_ids() + batches.stop().acknowledged_ids()
    stored = store_rows(root, accepted, uri)
    lost = len(accepted) - len(stored)
    figure(48, durability=durability, crash="SIGKILL", accepted=len(accepted), stored=len(stored), lost=lost,
           documented_buffer=0 if durability == "commit" else queue_size)  # fmt: skip
    if durability == "commit":
        assert lost == 0
    else:
        assert lost <= queue_size
    assert store_count(root, uri) >= len(stored)


def _feedback(server: Server, key: str, pid: str, label: int) -> requests.Response:
    return requests.post(
        f"{server.url}/feedback", json={"prediction_id": pid, "label": label}, headers=auth(key), timeout=30
    )


def test_case49_feedback_rules(project: tuple[Path, Keys]) -> None:
    root, keys = project
    db = root / "case49.db"
    env = {
        "SHIPML_STORE__URI": f"sqlite:///{db}", "SHIPML_STORE__DURABILITY": "async",
        "SHIPML_STORE__ASYNC_WINDOW_MS": "300",
    }  # fmt: skip
    server = start_server(root, "--workers", "2", env=env)
    try:
        wait_for_workers(server, 2)
        # unknown id (not recent: no wait) -> 404 in the error shape
        unknown_id = uuid.UUID(int=7 << 76 | 2 << 62 | 12345)
        unknown = _feedback(server, keys.admin, str(unknown_id), 1)
        assert unknown.status_code == 404, unknown.text
        assert unknown.json()["error"]["code"] == "unknown_prediction"
        # feedback right after the prediction, before its row is committed (300 ms window), on either worker
        made = predict_load(server, keys.predict, threads=2, max_requests=30, duration_s=30, new_connection_each=True)
        ids = made.run().acknowledged_ids()
        assert len(ids) == 30
        labels = {pid: str(i % 2) for i, pid in enumerate(ids)}
        first = [_feedback(server, keys.admin, pid, int(label)).status_code for pid, label in labels.items()]
        # a duplicate: the same feedback again is idempotent (or a 409); a changed label replaces it
        again = [_feedback(server, keys.admin, pid, int(labels[pid])).status_code for pid in ids[:5]]
    finally:
        assert server.stop() == 0
    joined = feedback_labels([*ids, str(unknown_id)], f"sqlite:///{db}")
    wrong = {pid for pid, label in labels.items() if joined.get(pid) != label}
    figure(49, unknown=unknown.status_code, feedback_first=sorted(set(first)), duplicate=sorted(set(again)),
           feedback_rows=len(joined), joined_wrong=len(wrong))  # fmt: skip
    assert first == [200] * 30
    assert set(again) <= {200, 409} and len(set(again)) == 1
    assert set(joined) == set(ids)  # every labelled prediction has its feedback, the unknown id none
    assert wrong == set()
    rows = store_rows(root, ids, f"sqlite:///{db}")
    assert {p.served.variant for p in rows.values()} == {"main"}


def test_case49_ids_unique_across_workers_and_restarts(project: tuple[Path, Keys]) -> None:
    root, keys = project
    uri = f"sqlite:///{root}/case49-ids.db"
    ids: list[str] = []
    for _ in range(2):
        server = start_server(root, "--workers", "2", env={"SHIPML_STORE__URI": uri})
        try:
            wait_for_workers(server, 2)
            load = Load(
                server.url, lambda i: ("POST", "/predict/batch", batch_body(i, 100)), auth(keys.predict),
                threads=4, max_requests=30, duration_s=60, new_connection_each=True,
            ).run()  # fmt: skip
            assert load.failed == []
            ids += load.acknowledged_ids()
        finally:
            assert server.stop() == 0
    # and one generator, a million ids: unique and strictly increasing
    generator = Uuid7Generator()
    many = generator.strings(1_000_000)
    figure(49, server_ids=len(ids), server_unique=len(set(ids)), generated=len(many), generated_unique=len(set(many)))
    assert len(set(ids)) == len(ids) == 2 * 30 * 100
    assert all(uuid.UUID(i).version == 7 for i in ids[:1000])
    assert len(set(many)) == len(many)
    assert many == sorted(many)
    assert json.dumps(ids[:1])  # ids are plain strings
