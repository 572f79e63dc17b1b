"""The service over its life: hot reload, a broken version, crashes, graceful stop, several workers."""

from __future__ import annotations

import concurrent.futures
import signal
import time
from pathlib import Path

import pytest
import requests

from shipml.adapters.store import PredictionStore
from tests.support.cli import one_error_line, shipml
from tests.support.project import CONFIG, train_project
from tests.support.server import Keys, Server, make_keys, records, start_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SMALL = CONFIG.replace("n_estimators: 100", "n_estimators: 10").replace("cv_folds: 5", "cv_folds: 2")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Keys]:
    root = tmp_path_factory.mktemp("lifecycle")
    train_project(root)
    keys, auth = make_keys()
    (root / "shipml.yaml").write_text(SMALL + auth + "serve:\n  reload_interval_s: 0.5\n  grace_period_s: 5\n")
    return root, keys


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def predict(server: Server, key: str) -> requests.Response:
    return requests.post(f"{server.url}/predict", json={"features": records(1)[0]}, headers=auth(key), timeout=30)


def stored_ids(root: Path, ids: list[str]) -> set[str]:
    """Which of ``ids`` are in the embedded prediction store."""
    store = PredictionStore(f"sqlite:///{root / '.shipml' / 'predictions.db'}")
    try:
        return {i for i in ids if store.predictions.get(i) is not None}
    finally:
        store.close()


def wait_for_version(server: Server, key: str, version: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predict(server, key).json()["model"]["version"] == version:
            return
        time.sleep(0.3)
    raise AssertionError(f"version {version} never served: {server.log.read_text()[-2000:]}")


def test_hot_reload_follows_the_alias_and_survives_a_broken_version(project: tuple[Path, Keys]) -> None:
    root, keys = project
    server = start_server(root)
    try:
        assert predict(server, keys.predict).json()["model"]["version"] == "1"
        # a new version promoted in the registry is picked up by the poller
        assert shipml(root, "train").returncode == 0
        assert shipml(root, "models", "promote", "churn", "2").returncode == 0
        wait_for_version(server, keys.predict, "2")
        # a version whose files do not match what was registered never serves
        assert shipml(root, "train").returncode == 0
        model_file = sorted((root / ".shipml" / "artifacts").rglob("model.skops"), key=lambda p: p.stat().st_mtime)[-1]
        model_file.write_bytes(b"not the registered model")
        assert shipml(root, "models", "promote", "churn", "3").returncode == 0
        forced = requests.post(f"{server.url}/admin/reload", headers=auth(keys.admin), timeout=60)
        assert forced.status_code == 502
        assert "sha256 mismatch" in forced.json()["error"]["message"]
        assert predict(server, keys.predict).json()["model"]["version"] == "2"
        metrics = requests.get(f"{server.url}/metrics", timeout=10).text
        assert 'shipml_model_load_failures_total{model="churn",reason="hash"}' in metrics
        assert "model_load_failed" in server.log.read_text()
        # rolling back in the registry is followed too
        assert shipml(root, "models", "rollback", "churn").returncode == 0
        wait_for_version(server, keys.predict, "2")
    finally:
        assert server.stop() == 0


def test_acknowledged_predictions_survive_sigkill(project: tuple[Path, Keys]) -> None:
    root, keys = project
    server = start_server(root)
    ids = [predict(server, keys.predict).json()["prediction_id"] for _ in range(50)]
    server.stop(signal.SIGKILL)
    assert stored_ids(root, ids) == set(ids)


def test_sigterm_finishes_in_flight_requests_and_exits_0(project: tuple[Path, Keys]) -> None:
    root, keys = project
    server = start_server(root)
    batch = {"records": records(5000, seed=4)}
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        in_flight = pool.submit(
            requests.post, f"{server.url}/predict/batch", json=batch, headers=auth(keys.predict), timeout=60
        )
        time.sleep(0.3)
        started = time.monotonic()
        code = server.stop(signal.SIGTERM)
        answer = in_flight.result()
    assert code == 0
    assert time.monotonic() - started < 5 + 5
    assert answer.status_code == 200 and answer.json()["failed"] == 0


def test_async_durability_flushes_on_shutdown(project: tuple[Path, Keys]) -> None:
    root, keys = project
    server = start_server(root, env={"SHIPML_STORE__DURABILITY": "async"})
    ids = [predict(server, keys.predict).json()["prediction_id"] for _ in range(30)]
    assert server.stop() == 0
    assert stored_ids(root, ids) == set(ids)


def test_two_workers_share_one_metrics_view(project: tuple[Path, Keys]) -> None:
    root, keys = project
    server = start_server(root, "--workers", "2")
    try:
        before = _predictions_ok(server)
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda _: predict(server, keys.predict).status_code, range(60)))
        assert results == [200] * 60
        assert _predictions_ok(server) - before == 60  # whichever worker answers /metrics
        assert _predictions_ok(server) - before == 60
    finally:
        assert server.stop() == 0


def test_feedback_right_after_an_async_prediction_on_another_worker_is_joined(project: tuple[Path, Keys]) -> None:
    """Async durability commits every store.async_window_ms in each worker: feedback that lands on the other
    worker before that commit still finds its prediction (correctness review L7)."""
    root, keys = project
    env = {"SHIPML_STORE__DURABILITY": "async", "SHIPML_STORE__ASYNC_WINDOW_MS": "300"}
    server = start_server(root, "--workers", "2", env=env)
    try:
        statuses = []
        for _ in range(12):  # a new connection each time: the two workers take turns at random
            made = predict(server, keys.predict).json()
            fb = requests.post(
                f"{server.url}/feedback",
                json={"prediction_id": made["prediction_id"], "label": 1},
                headers=auth(keys.admin),
                timeout=30,
            )
            statuses.append(fb.status_code)
        assert statuses == [200] * 12
    finally:
        assert server.stop() == 0


def _predictions_ok(server: Server) -> float:
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("shipml_predictions_total") and 'status="ok"' in line
    )


def test_auth_must_be_configured_or_disabled_explicitly(project: tuple[Path, Keys], tmp_path: Path) -> None:
    root, _ = project
    (tmp_path / "shipml.yaml").write_text(
        SMALL.replace(".shipml/", f"{root}/.shipml/") + f"registry:\n  uri: sqlite:///{root}/.shipml/mlflow.db\n"
    )
    assert "auth.keys: no API keys configured" in one_error_line(shipml(tmp_path, "serve"))
    (tmp_path / "shipml.yaml").write_text((tmp_path / "shipml.yaml").read_text() + "auth:\n  enabled: false\n")
    server = start_server(tmp_path)
    try:
        assert predict(server, "anything").status_code == 200
        assert "AUTHENTICATION IS DISABLED" in server.log.read_text()
    finally:
        assert server.stop() == 0


def test_cors_when_configured_and_predict_through_the_framework_route(project: tuple[Path, Keys]) -> None:
    """With CORS origins configured, /predict goes through FastAPI's route (no fast lane): same answers."""
    root, keys = project
    server = start_server(root, env={"SHIPML_SERVE__CORS_ORIGINS": '["https://app.example"]'})
    try:
        allowed = requests.post(
            f"{server.url}/predict", json={"features": records(1)[0]},
            headers=auth(keys.predict) | {"Origin": "https://app.example"}, timeout=10,
        )  # fmt: skip
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        assert "access-control-allow-credentials" not in allowed.headers
        assert allowed.headers["x-model-version"] == allowed.json()["model"]["version"]
        other = requests.post(
            f"{server.url}/predict", json={"features": records(1)[0]},
            headers=auth(keys.predict) | {"Origin": "https://evil.example"}, timeout=10,
        )  # fmt: skip
        assert "access-control-allow-origin" not in other.headers
        bad = requests.post(
            f"{server.url}/predict", json={"features": {"tenure": "x"}}, headers=auth(keys.predict), timeout=10
        )
        assert bad.status_code == 422 and bad.json()["error"]["details"][0]["record"] == 0
        assert requests.post(f"{server.url}/predict", json={"features": {}}, timeout=10).status_code == 401
    finally:
        assert server.stop() == 0


def test_the_pipeline_serves_through_the_micro_batcher_with_the_fast_paths_answers(
    project: tuple[Path, Keys],
) -> None:
    root, keys = project
    bodies = [{"features": r} for r in records(24)]

    def answers(server: Server) -> list[dict[str, float]]:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            got = list(
                pool.map(
                    lambda b: requests.post(f"{server.url}/predict", json=b, headers=auth(keys.predict), timeout=30),
                    bodies,
                )
            )
        assert [r.status_code for r in got] == [200] * len(bodies)
        return [r.json()["probabilities"] for r in got]

    fast = start_server(root)
    try:
        model = requests.get(f"{fast.url}/model", headers=auth(keys.predict), timeout=10).json()
        assert (model["predictor"], model["micro_batching"]) == ("fast", False)
        want = answers(fast)
    finally:
        assert fast.stop() == 0
    slow = start_server(root, env={"SHIPML_SERVE__FAST_PATH": "false"})
    try:
        model = requests.get(f"{slow.url}/model", headers=auth(keys.predict), timeout=10).json()
        assert (model["predictor"], model["micro_batching"]) == ("pipeline", True)
        assert answers(slow) == want  # the same floats, through grouped pipeline calls
    finally:
        assert slow.stop() == 0


def test_a_store_that_cannot_be_opened_is_one_error_line_before_any_worker_starts(
    project: tuple[Path, Keys], tmp_path: Path
) -> None:
    root, _ = project
    (tmp_path / "not-a-directory").write_text("")
    (tmp_path / "shipml.yaml").write_text(
        SMALL.replace(".shipml/", f"{root}/.shipml/") + f"registry:\n  uri: sqlite:///{root}/.shipml/mlflow.db\n"
        + "auth:\n  enabled: false\n"
        + f"store:\n  uri: sqlite:///{tmp_path}/not-a-directory/predictions.db\n"
    )  # fmt: skip
    line = one_error_line(shipml(tmp_path, "serve", "--workers", "2", "--port", "1"))
    assert line.startswith("error: store.uri: cannot open sqlite:///") and "not-a-directory" in line, line
