"""Reliability catalogue, faults (cases 33-44): the real service, the real store, real clients."""

from __future__ import annotations

import concurrent.futures
import contextlib
import http.client
import itertools
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.reliability.load import (
    SMALL,
    FaultProxy,
    Load,
    artifact_files,
    batch_body,
    figure,
    get_json,
    integrity_check,
    make_project,
    metric,
    move_production,
    predict_body,
    predict_load,
    proc_figures,
    registry,
    store_count,
    store_rows,
    train,
    wait_for_workers,
    worker_pids,
)
from tests.support.cli import shipml
from tests.support.mlflow_server import mlflow_server
from tests.support.project import CONFIG, SMALL_FOREST
from tests.support.server import Keys, Server, auth, spawn_server, start_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Keys]:
    """churn/1 in production, churn/2 registered (both healthy), polling every 0.5 s."""
    root = tmp_path_factory.mktemp("faults")
    keys = make_project(root, "reload_interval_s: 0.5")
    assert train(root) == "2"
    return root, keys


def store_env(root: Path, name: str, **extra: str) -> dict[str, str]:
    """A store of this test's own, so counts are this test's rows."""
    return {"SHIPML_STORE__URI": f"sqlite:///{root}/{name}.db"} | extra


def wait_for(check: object, timeout: float, what: str, step: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(step)
    raise AssertionError(f"not within {timeout} s: {what}")


def served_version(server: Server, key: str) -> str:
    status, body = get_json(server, "/model", key)
    assert status == 200, body
    return str(body["version"])


# -- 33, 34: the registry down or slow (a real `mlflow server` behind a fault proxy) -------------------


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory, project: tuple[Path, Keys]) -> Iterator[tuple[Path, FaultProxy]]:
    """A real `mlflow server` with churn/1 in production and churn/2 registered, a FaultProxy in front."""
    root = tmp_path_factory.mktemp("registry-server")
    with mlflow_server(root) as (url, port):
        yield from _registered(root, url, port, project)


def _registered(root: Path, url: str, port: int, project: tuple[Path, Keys]) -> Iterator[tuple[Path, FaultProxy]]:
    """churn/1 in production and churn/2 registered on the server at ``url``, the project's keys, a proxy."""
    env = {"SHIPML_REGISTRY_URI": url}
    config = CONFIG.replace("n_estimators: 100", f"n_estimators: {SMALL_FOREST['n_estimators']}")
    (root / "shipml.yaml").write_text(config.replace("cv_folds: 5", "cv_folds: 2"))
    assert shipml(root, "example", "churn", ".shipml/data/churn.csv", "--rows", "1500").returncode == 0
    for _ in range(2):
        trained = shipml(root, "train", env=env)
        assert trained.returncode == 0, trained.stdout + trained.stderr
    assert shipml(root, "models", "promote", "churn", "1", env=env).returncode == 0
    auth_yaml = (project[0] / "auth.yaml").read_text()
    (root / "shipml.yaml").write_text(
        (root / "shipml.yaml").read_text()
        + auth_yaml
        + "serve:\n  reload_interval_s: 1\n  reload_jitter: 0\n  grace_period_s: 5\n"
    )
    proxy = FaultProxy(port)
    yield root, proxy
    proxy.close()


# MLflow's client retries a refused request 7 times with exponential back-off (minutes) by default;
# a deployment that wants its poll to fail fast says so, and so does this test.
FAST_FAIL = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}


def test_case33_registry_down_at_startup_live_but_not_ready_until_a_model_loads(
    remote: tuple[Path, FaultProxy], project: tuple[Path, Keys]
) -> None:
    root, proxy = remote
    keys = project[1]
    proxy.set_mode("reset")
    server = spawn_server(root, "--registry-uri", proxy.url, env=FAST_FAIL)
    try:
        wait_for(lambda: _status(server, "/health/live") == 200, 60, "live while the registry is down")
        samples = []
        for _ in range(10):  # 5 s of outage: live, never ready, predictions refused with a 503
            samples.append((_status(server, "/health/live"), _status(server, "/health/ready")))
            time.sleep(0.5)
        assert set(samples) == {(200, 503)}
        refused = requests.post(
            f"{server.url}/predict",
            data=predict_body(0),
            headers=auth(keys.predict) | {"Content-Type": "application/json"},
            timeout=10,
        )
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "not_ready"
        attempts_while_down = proxy.connections
        proxy.set_mode("pass")
        started = time.monotonic()
        wait_for(lambda: _status(server, "/health/ready") == 200, 30, "ready once the registry is back")
        recovered_s = time.monotonic() - started
        assert served_version(server, keys.predict) == "1"
        figure(33, attempts_while_down=attempts_while_down, ready_after_registry_back_s=round(recovered_s, 1))
    finally:
        assert server.stop() == 0


def test_case33_retries_with_backoff(remote: tuple[Path, FaultProxy], project: tuple[Path, Keys]) -> None:
    root, proxy = remote
    proxy.set_mode("reset")
    server = spawn_server(root, "--registry-uri", proxy.url, env=FAST_FAIL)
    try:
        wait_for(lambda: _status(server, "/health/live") == 200, 60, "live")
        times = []
        seen = proxy.connections
        # back-off doubles each failed poll: 2, 4, 8 s at a 1 s interval (no jitter here); watch for two gaps
        # (at most 12 s), giving up after 40 s on a busy machine
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and len(times) < 3:
            if proxy.connections != seen:
                seen = proxy.connections
                # one poll may open more than one connection (the client's own retry, a second request): a poll
                # is the connections within half a second of its first
                if not times or time.monotonic() - times[-1] > 0.5:
                    times.append(time.monotonic())
            time.sleep(0.05)
        gaps = [b - a for a, b in itertools.pairwise(times)]
        figure(33, retry_gaps_s=[round(g, 1) for g in gaps])
        assert len(gaps) >= 2 and gaps[-1] >= 1.5 * gaps[0], gaps  # doubling; a fixed interval gives 1.0
    finally:
        proxy.set_mode("pass")
        server.stop()


def test_case34_registry_reset_or_slow_at_a_poll_old_version_serves_on(
    remote: tuple[Path, FaultProxy], project: tuple[Path, Keys]
) -> None:
    root, proxy = remote
    keys = project[1]
    proxy.set_mode("pass")
    proxy.delay_s = 10.0
    server = start_server(root, "--registry-uri", proxy.url, env=FAST_FAIL | store_env(root, "case34"))
    try:
        failures_before = metric(server, "shipml_model_load_failures_total")
        load = predict_load(server, keys.predict, threads=2, rate=40, duration_s=60).start()
        time.sleep(1)
        proxy.set_mode("reset")
        time.sleep(3)  # about three polls answered with a TCP reset
        failures_reset = metric(server, "shipml_model_load_failures_total") - failures_before
        proxy.set_mode("delay")
        time.sleep(4)  # a poll hangs on a registry that answers after 10 s
        proxy.set_mode("pass")
        # the next poll after the fault follows a promotion done meanwhile
        shipml(root, "models", "promote", "churn", "2", env={"SHIPML_REGISTRY_URI": proxy.url})
        wait_for(lambda: served_version(server, keys.predict) == "2", 30, "the promotion after the fault is followed")
        result = load.stop()
        figure(
            34, sent=result.sent, failed=len(result.failed), rate=round(result.rate, 1),
            load_failures_during_reset=failures_reset, statuses=result.statuses(),
        )  # fmt: skip
        assert result.failed == []
        assert failures_reset >= 1
    finally:
        proxy.set_mode("pass")
        shipml(root, "models", "promote", "churn", "1", env={"SHIPML_REGISTRY_URI": proxy.url})
        assert server.stop() == 0


def test_case34_model_shows_the_last_successful_check(
    remote: tuple[Path, FaultProxy], project: tuple[Path, Keys]
) -> None:
    root, proxy = remote
    server = start_server(root, "--registry-uri", proxy.url, env=FAST_FAIL)
    try:
        _, body = get_json(server, "/model", project[1].predict)
        checked = body["registry"]["last_check"]
        assert isinstance(checked, float) and time.time() - 60 < checked <= time.time(), body["registry"]
        assert body["registry"]["desired_version"] == body["registry"]["serving_version"] == body["version"]
    finally:
        assert server.stop() == 0


def _predicts(server: Server, key: str) -> int:
    """The status of one /predict (0: no answer)."""
    try:
        return requests.post(f"{server.url}/predict", data=predict_body(0), headers=auth(key)
                             | {"Content-Type": "application/json"}, timeout=5).status_code  # fmt: skip
    except requests.ConnectionError:
        return 0


def _status(server: Server, path: str) -> int:
    try:
        return requests.get(f"{server.url}{path}", timeout=5).status_code
    except requests.ConnectionError:
        return 0


# -- 35, 37: the alias moved to a broken version, and flipped, under load -------------------------------------


@pytest.fixture(scope="module")
def broken_versions(project: tuple[Path, Keys]) -> dict[str, str]:
    """churn/3 with a file that does not match its manifest; churn/4 trained on one more required feature."""
    root, _ = project
    corrupt = train(root)
    model_file = next(p for p in artifact_files(root, corrupt) if p.name == "model.skops")
    model_file.write_bytes(b"not the registered model")
    import pandas as pd

    data = pd.read_csv(root / ".shipml/data/churn.csv")
    data["region"] = ["north", "south"] * (len(data) // 2) + ["north"] * (len(data) % 2)
    data.to_csv(root / ".shipml/data/churn_region.csv", index=False)
    config = SMALL.replace(".shipml/data/churn.csv", ".shipml/data/churn_region.csv").replace(
        "    - {name: gender,",
        "    - {name: region, kind: categorical, categories: [north, south]}\n    - {name: gender,",
    )
    assert "region" in config
    (root / "region.yaml").write_text(config)
    trained = shipml(root, "train", "--config", "region.yaml")
    assert trained.returncode in (0, 1), trained.stdout + trained.stderr
    incompatible = str(len(registry(root).versions("churn")))
    assert incompatible != corrupt
    return {"corrupt": corrupt, "incompatible": incompatible}


@pytest.mark.parametrize(
    "kind",
    [
        "corrupt",
        "incompatible",
    ],
)
def test_case35_alias_moved_to_a_broken_version_under_load(
    project: tuple[Path, Keys], broken_versions: dict[str, str], kind: str
) -> None:
    root, keys = project
    move_production(root, "1")
    server = start_server(root, env=store_env(root, f"case35-{kind}"))
    try:
        failures_before = metric(server, "shipml_model_load_failures_total")
        load = predict_load(server, keys.predict, threads=3, rate=100, duration_s=60).start()
        time.sleep(1.5)
        move_production(root, broken_versions[kind])
        time.sleep(4)  # eight polls at 0.5 s
        serving = served_version(server, keys.predict)
        failures = metric(server, "shipml_model_load_failures_total") - failures_before
        result = load.stop()
        figure(
            35, broken=kind, sent=result.sent, failed=len(result.failed), statuses=result.statuses(),
            rate=round(result.rate, 1), model_serving=serving, load_failures=failures,
        )  # fmt: skip
        assert result.failed == []
        assert serving == "1"
        assert failures >= 1
    finally:
        move_production(root, "1")
        assert server.stop() == 0


def test_case35_model_reports_desired_and_serving(project: tuple[Path, Keys], broken_versions: dict[str, str]) -> None:
    root, keys = project
    move_production(root, "1")
    server = start_server(root, env=store_env(root, "case35-desired"))
    try:
        move_production(root, broken_versions["corrupt"])
        time.sleep(2)
        _, body = get_json(server, "/model", keys.predict)
        assert body["registry"]["desired_version"] == broken_versions["corrupt"], body["registry"]
        assert body["registry"]["serving_version"] == body["version"] == "1"
        assert "sha256 mismatch" in body["registry"]["last_error"]
    finally:
        move_production(root, "1")
        assert server.stop() == 0


def _events(server: Server) -> list[dict[str, object]]:
    """The service's JSON log events."""
    out = []
    for line in server.log.read_text().splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
    return out


def test_case36_two_reloads_at_once_load_once(project: tuple[Path, Keys]) -> None:
    root, keys = project
    move_production(root, "1")
    server = start_server(root, env=store_env(root, "case36", SHIPML_SERVE__RELOAD_INTERVAL_S="0"))
    try:
        rss_before = proc_figures(server.proc.pid).rss_kb
        move_production(root, "2")
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            answers = list(
                pool.map(
                    lambda _: requests.post(f"{server.url}/admin/reload", headers=auth(keys.admin), timeout=60),
                    range(2),
                )
            )
        bodies = sorted((a.status_code, json.dumps(a.json(), sort_keys=True)) for a in answers)

        def loads_of_2() -> list[dict[str, object]]:
            return [e for e in _events(server) if e.get("event") == "model_loaded" and e.get("version") == "2"]

        wait_for(loads_of_2, 10, "the load of version 2 in the service log (flushed periodically)")
        time.sleep(1.0)  # a second load, if there were one, is logged by now too
        loads = loads_of_2()
        rss_after = proc_figures(server.proc.pid).rss_kb
        figure(
            36, answers=[b for _, b in bodies], loads_of_v2=len(loads), rss_kb_before=rss_before, rss_kb_after=rss_after
        )
        assert [s for s, _ in bodies] == [200, 200]
        changed = sorted(json.loads(b)["changed"] for _, b in bodies)
        assert changed == [False, True]
        assert all(json.loads(b)["version"] == "2" for _, b in bodies)
        assert len(loads) == 1
        assert served_version(server, keys.predict) == "2"
    finally:
        move_production(root, "1")
        assert server.stop() == 0


def test_case37_alias_flips_under_load_one_version_per_answer_and_logged(project: tuple[Path, Keys]) -> None:
    root, keys = project
    move_production(root, "1")
    server = start_server(root, env=store_env(root, "case37"))
    try:
        load = predict_load(server, keys.predict, threads=4, rate=150, duration_s=60).start()
        for version in ("2", "1", "2", "1"):
            time.sleep(2)
            move_production(root, version)
        time.sleep(2)
        result = load.stop()
    finally:
        move_production(root, "1")
        assert server.stop() == 0
    assert result.failed == [], server.log.read_text()[-3000:]
    ok = [a for a in result.answers if a.status == 200]
    stored = store_rows(root, [a.prediction_ids[0] for a in ok], f"sqlite:///{root}/case37.db")
    mismatched = [a for a in ok if (p := stored.get(a.prediction_ids[0])) is None or p.served.version != a.version]
    versions = sorted({a.version for a in ok if a.version})
    figure(
        37, sent=result.sent, failed=len(result.failed), rate=round(result.rate, 1), p99_ms=result.p(0.99),
        versions_seen=versions, logged_version_mismatches=len(mismatched),
    )  # fmt: skip
    assert result.failed == []
    assert all(a.version is not None and a.version == a.header_version for a in ok)
    assert len(stored) == len(ok)
    assert mismatched == []
    assert versions == ["1", "2"]


def test_case38_every_worker_follows_a_flip(project: tuple[Path, Keys]) -> None:
    root, keys = project
    move_production(root, "1")
    server = start_server(root, "--workers", "2", env=store_env(root, "case38"))
    try:
        wait_for_workers(server, 2)
        assert metric(server, "shipml_model_info", version="1") == 1
        move_production(root, "2")
        started = time.monotonic()

        def all_on_2() -> bool:
            # model_info is "livemax" over workers: 1 for a version while any worker still serves it
            return metric(server, "shipml_model_info", version="1") == 0 and (
                metric(server, "shipml_model_info", version="2") == 1
            )

        wait_for(all_on_2, 0.5 + 5, "every worker on version 2 within poll interval + 5 s")
        took = time.monotonic() - started
        fresh = set()
        for _ in range(20):  # new connections land on either worker
            with requests.Session() as s:
                fresh.add(s.get(f"{server.url}/model", headers=auth(keys.predict), timeout=10).json()["version"])
        figure(
            38, workers=len(worker_pids(server)), all_workers_on_new_version_after_s=round(took, 1), seen=sorted(fresh)
        )
        assert fresh == {"2"}
    finally:
        move_production(root, "1")
        assert server.stop() == 0


# -- 39: disk full under the store ---------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("case 39 mounts a small tmpfs: needs root")
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(mount: Path) -> Path:
    """Fill the filesystem to the last block."""
    filler = mount / "filler"
    with filler.open("wb", buffering=0) as f:  # unbuffered: closing it has nothing left to write on a full disk
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass
    return filler


@pytest.mark.parametrize("durability", ["commit", "async"])
def test_case39_disk_full_under_the_store(project: tuple[Path, Keys], small_disk: Path, durability: str) -> None:
    root, keys = project
    move_production(root, "1")
    uri = f"sqlite:///{small_disk}/predictions.db"
    server = start_server(root, env={"SHIPML_STORE__URI": uri, "SHIPML_STORE__DURABILITY": durability})
    try:
        warm = predict_load(server, keys.predict, threads=2, max_requests=200, duration_s=30).run()
        assert warm.failed == []
        rss_full_start = proc_figures(server.proc.pid).rss_kb
        filler = _fill(small_disk)
        # a store that can no longer grow: batches of 100 rows each need new pages
        full = Load(server.url, lambda i: ("POST", "/predict/batch", batch_body(i)), auth(keys.predict),
                    threads=2, duration_s=8, max_requests=400).run()  # fmt: skip
        alive = _status(server, "/health/live")
        rss_full_end = proc_figures(server.proc.pid).rss_kb
        store_errors = metric(server, "shipml_store_errors_total")
        codes = sorted({a.error for a in full.failed})
        filler.unlink()  # space returns
        # async: the writer retries the batch it holds (back-off up to 1 s) and then writes its queue; until then
        # the full queue sheds. The service takes predictions again once it has (the time is printed).
        returned = time.monotonic()
        while time.monotonic() - returned < 30 and _predicts(server, keys.predict) != 200:
            time.sleep(0.2)
        recovered_s = round(time.monotonic() - returned, 1)
        time.sleep(0.5)
        after = predict_load(server, keys.predict, threads=2, max_requests=200, duration_s=30).run()
        time.sleep(0.5)  # async: the writer's next window
        logged_after = store_rows(root, after.acknowledged_ids(), uri)
        figure(
            39, durability=durability, while_full=full.statuses(), error_codes=codes, store_errors=store_errors,
            live=alive, rss_kb_start=rss_full_start, rss_kb_end=rss_full_end,
            recovered_s=recovered_s, after_space_returns=after.statuses(), logged_after=f"{len(logged_after)}/{len(after.acknowledged_ids())}",
        )  # fmt: skip
        assert server.proc.poll() is None and alive == 200
        if durability == "commit":
            # fail closed: an answer is never given for a prediction that was not logged
            assert full.count(503) > 0 and set(full.statuses()) <= {200, 503}
            assert codes == ["store_unavailable"]
        else:
            # predictions go on and the rows that could not be written are counted; the writer, slowed by
            # failing commits, falls behind and the documented shedding (503 `overloaded` at a full queue)
            # bounds the buffer
            assert full.count(200) > 0 and set(full.statuses()) <= {200, 503}
            assert set(codes) <= {"overloaded"}
            assert store_errors > 0
        assert after.failed == []
        assert len(logged_after) == len(after.acknowledged_ids())
    finally:
        assert server.stop() == 0


# -- 40: SIGKILL of a worker under load ------------------------------------------------------------------------


def test_case40_sigkill_of_a_worker_under_load(project: tuple[Path, Keys]) -> None:
    root, keys = project
    move_production(root, "1")
    db = root / "case40.db"
    server = start_server(root, "--workers", "2", env={"SHIPML_STORE__URI": f"sqlite:///{db}"})
    try:
        first = wait_for_workers(server, 2)
        singles = predict_load(
            server, keys.predict, threads=3, rate=150, duration_s=8, new_connection_each=True
        ).start()
        batches = Load(server.url, lambda i: ("POST", "/predict/batch", batch_body(i)), auth(keys.predict),
                       threads=1, rate=5, duration_s=8).start()  # fmt: skip
        time.sleep(3)
        victim = first[0]
        os.kill(victim, signal.SIGKILL)  # one worker, not the parent
        result_s, result_b = singles.wait(), batches.wait()
        after = wait_for_workers(server, 2, exclude={victim})
    finally:
        assert server.stop() == 0
    answers = result_s.answers + result_b.answers
    acknowledged = result_s.acknowledged_ids() + result_b.acknowledged_ids()
    cut = sum(1 for a in answers if a.status == 0)
    stored = store_rows(root, acknowledged, f"sqlite:///{db}")
    rows = store_count(root, f"sqlite:///{db}")
    integrity = integrity_check(db)
    figure(
        40, acknowledged=len(acknowledged), rows=rows, acknowledged_present=len(stored),
        duplicates=len(acknowledged) - len(set(acknowledged)), requests_cut_by_kill=cut,
        other_failures=sum(1 for a in answers if a.status not in (0, 200)), integrity=integrity,
        workers_after=len(after),
    )  # fmt: skip
    assert integrity == "ok"
    assert len(set(acknowledged)) == len(acknowledged)
    assert len(stored) == len(acknowledged)  # every acknowledged prediction is in the store
    # rows beyond the acknowledged ones can only be those committed just before the kill cut their answer
    assert len(acknowledged) <= rows <= len(acknowledged) + 100 * cut
    assert all(a.status in (0, 200) for a in answers)


# -- 41: SIGTERM with 50 requests in flight ------------------------------------------------------------------


class InFlight:
    """``n`` batch requests sent on ``n`` keep-alive connections opened (and used once) beforehand, so
    every one of them has reached the server when the test goes on; their answers are read later."""

    def __init__(self, server: Server, key: str, n: int, rows: int) -> None:
        port = int(server.url.rsplit(":", 1)[1])
        body = json.dumps({"records": json.loads(batch_body(0, 100))["records"] * (rows // 100)}).encode()
        headers = auth(key) | {"Content-Type": "application/json"}
        self.conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=60) for _ in range(n)]
        for c in self.conns:
            c.request("GET", "/health/live")
            c.getresponse().read()
        for c in self.conns:
            c.request("POST", "/predict/batch", body=body, headers=headers)

    def answers(self) -> list[tuple[int, list[str]]]:
        """(status, prediction ids) of each request; status 0 for a connection cut without an answer."""
        out = []
        for c in self.conns:
            try:
                r = c.getresponse()
                raw = r.read()
                ids = [p["prediction_id"] for p in json.loads(raw).get("predictions", [])] if r.status == 200 else []
                out.append((r.status, ids))
            except (OSError, http.client.HTTPException):
                out.append((0, []))
            finally:
                c.close()
        return out


IN_FLIGHT_ENV = {
    "SHIPML_STORE__DURABILITY": "async",
    "SHIPML_STORE__ASYNC_WINDOW_MS": "500",  # rows wait in the buffer: the stop must flush them
    "SHIPML_STORE__QUEUE_SIZE": "100000",
    "SHIPML_SERVE__GRACE_PERIOD_S": "10",
}


def test_case41_sigterm_with_50_in_flight_completes_them_and_flushes(project: tuple[Path, Keys]) -> None:
    root, keys = project
    move_production(root, "1")
    uri = f"sqlite:///{root}/case41.db"
    server = start_server(root, env={"SHIPML_STORE__URI": uri} | IN_FLIGHT_ENV)
    flight = InFlight(server, keys.predict, 50, 100)
    time.sleep(0.2)
    started = time.monotonic()
    code = server.stop(signal.SIGTERM, timeout=30)
    exit_s = time.monotonic() - started
    got = flight.answers()
    ids = [pid for _, batch in got for pid in batch]
    logged = store_count(root, uri)
    figure(
        41, in_flight=50, answered=[s for s, _ in got].count(200), statuses=sorted({s for s, _ in got}),
        exit_code=code, exit_s=round(exit_s, 1), grace_s=10, acknowledged_rows=len(ids), logged_rows=logged,
    )  # fmt: skip
    assert [s for s, _ in got] == [200] * 50, server.log.read_text()[-2000:]
    assert code == 0 and exit_s < 10 + 5
    assert logged == len(ids) == 50 * 100
    assert len(store_rows(root, ids, uri)) == len(ids)


def test_case41_readiness_turns_503_at_once_on_sigterm(project: tuple[Path, Keys]) -> None:
    root, keys = project
    # serve.drain_s: readiness turns 503 at the signal while the port stays open, then uvicorn drains
    server = start_server(root, env=store_env(root, "case41-ready") | IN_FLIGHT_ENV | {"SHIPML_SERVE__DRAIN_S": "2"})
    port = int(server.url.rsplit(":", 1)[1])
    idle = http.client.HTTPConnection("127.0.0.1", port, timeout=10)  # a prober's kept-alive connection
    idle.request("GET", "/health/ready")
    assert idle.getresponse().read() and True
    flight = InFlight(server, keys.predict, 50, 100)
    time.sleep(0.2)
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(0.1)
    fresh = _status(server, "/health/ready")
    try:
        idle.request("GET", "/health/ready")
        kept: int | str = idle.getresponse().status
    except (OSError, http.client.HTTPException) as exc:
        kept = type(exc).__name__
    statuses = [s for s, _ in flight.answers()]
    code = server.stop()
    figure(41, ready_probe_new_connection=fresh or "connection refused", ready_probe_kept_alive=kept,
           in_flight_answered=statuses.count(200))  # fmt: skip
    assert fresh == 503 and kept == 503
    assert statuses == [200] * 50 and code == 0


# -- 42: slow clients -------------------------------------------------------------------------------------------


def test_case42_slow_clients_are_cut_at_a_timeout(project: tuple[Path, Keys]) -> None:
    """Ten clients trickling their headers or their body at 1 byte/s are answered 408 and cut at
    serve.read_timeout_s (2 s here), while other clients' requests all succeed."""
    root, keys = project
    server = start_server(root, env=store_env(root, "case42", SHIPML_SERVE__READ_TIMEOUT_S="2"))
    port = int(server.url.rsplit(":", 1)[1])
    request = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {keys.predict}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(predict_body(0))}\r\n\r\n"
    ).encode()
    limit_s = 8.0  # longer than the 5 s keep-alive timeout, so that one cannot be what cuts them

    def trickle(what: str) -> tuple[float | None, bytes]:
        """Seconds until the server answered or closed the connection (None if it did neither within
        ``limit_s``), and the first line of its answer."""
        data = request[:20] if what == "headers" else request
        rest = request[20:] + predict_body(0) if what == "headers" else predict_body(0)
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.sendall(data)
            started = time.monotonic()
            for byte in rest:
                if time.monotonic() - started > limit_s:
                    return None, b""
                try:
                    s.sendall(bytes([byte]))
                    s.settimeout(1.0)
                    answer = s.recv(4096)
                except TimeoutError:
                    continue
                except OSError:
                    return time.monotonic() - started, b""
                took = time.monotonic() - started
                # then closed (a timeout here if the connection stayed open): by a FIN, or by a reset when a byte
                # of ours was still unread
                with contextlib.suppress(ConnectionResetError):
                    while s.recv(4096):
                        pass
                return took, answer.split(b"\r\n", 1)[0]
            return None, b""

    try:
        with concurrent.futures.ThreadPoolExecutor(10) as pool:
            slow = [pool.submit(trickle, "headers" if i % 2 else "body") for i in range(10)]
            others = predict_load(server, keys.predict, threads=2, rate=50, duration_s=limit_s).run()
            cut = [f.result() for f in slow]
        figure(42, slow_clients=10, closed_after_s=[None if c is None else round(c, 1) for c, _ in cut],
               others_failed=len(others.failed), others_p99_ms=others.p(0.99))  # fmt: skip
        assert others.failed == []
        assert all(c is not None for c, _ in cut)
        assert [line for _, line in cut] == [b"HTTP/1.1 408 Request Timeout"] * 10
    finally:
        assert server.stop() == 0


# -- 43: a model call that takes too long ---------------------------------------------------------------------


def test_case43_model_call_past_the_timeout_is_504_and_the_worker_recovers(project: tuple[Path, Keys]) -> None:
    """A model call that does not answer within serve.request_timeout_s: the pipeline served through the
    micro-batcher, whose call for a lone request waits max_wait_ms (1 s) for company, against a 0.6 s
    timeout. The request gets a 504 at the timeout; the worker goes on, and a request that does not wait
    (a batch of max_batch_size rows is called at once, without the abandoned row) is answered within the
    same timeout. A first full batch warms the pipeline up, so that the last one's time is the model's."""
    root, keys = project
    move_production(root, "1")
    env = store_env(
        root, "case43", SHIPML_SERVE__FAST_PATH="false", SHIPML_SERVE__REQUEST_TIMEOUT_S="0.6",
        SHIPML_SERVE__BATCHING__MAX_WAIT_MS="1000", SHIPML_SERVE__BATCHING__MAX_BATCH_SIZE="64",
    )  # fmt: skip
    server = start_server(root, env=env)
    headers = auth(keys.predict) | {"Content-Type": "application/json"}
    try:
        warm = requests.post(f"{server.url}/predict/batch", data=batch_body(0, 64), headers=headers, timeout=30)
        assert warm.status_code == 200
        started = time.monotonic()
        slow = requests.post(f"{server.url}/predict", data=predict_body(1), headers=headers, timeout=30)
        took = time.monotonic() - started
        nxt = requests.post(f"{server.url}/predict/batch", data=batch_body(0, 64), headers=headers, timeout=30)
        alive = _status(server, "/health/ready")
        figure(43, status=slow.status_code, code=slow.json()["error"]["code"] if slow.status_code != 200 else "",
               answered_after_s=round(took, 2), timeout_s=0.6, next_request=nxt.status_code,
               next_failed=nxt.json().get("failed"), ready=alive)  # fmt: skip
        assert slow.status_code == 504
        assert slow.json()["error"]["code"] == "timeout"
        assert nxt.status_code == 200 and nxt.json()["failed"] == 0
        assert alive == 200
    finally:
        assert server.stop() == 0


# -- 44: several workers, predictions and feedback, one SQLite file -------------------------------------------------


def test_case44_workers_write_predictions_and_feedback_to_one_sqlite_file(project: tuple[Path, Keys]) -> None:
    root, keys = project
    move_production(root, "1")
    uri = f"sqlite:///{root}/case44.db"
    server = start_server(root, "--workers", "2", env={"SHIPML_STORE__URI": uri})
    try:
        wait_for_workers(server, 2)
        result = predict_load(server, keys.predict, threads=4, rate=120, duration_s=5, new_connection_each=True).run()
        ids = result.acknowledged_ids()
        feedback = Load(
            server.url,
            lambda i: ("POST", "/feedback", json.dumps({"prediction_id": ids[i % len(ids)], "label": i % 2}).encode()),
            auth(keys.admin), threads=4, max_requests=min(200, len(ids)), duration_s=30, new_connection_each=True,
        ).run()  # fmt: skip
        assert server.proc.poll() is None, server.log.read_text()[-3000:]
        store_errors = metric(server, "shipml_store_errors_total")
    finally:
        assert server.stop() == 0
    locked = server.log.read_text().count("database is locked")
    figure(44, workers=2, predictions=result.statuses(), feedback=feedback.statuses(),
           store_errors=store_errors, locked_messages=locked, rows=store_count(root, uri))  # fmt: skip
    assert result.failed == [] and feedback.failed == []
    assert store_errors == 0 and locked == 0
    assert store_count(root, uri) == len(ids)
