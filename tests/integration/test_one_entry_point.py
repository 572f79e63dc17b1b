"""Issue 16, item 3, and review finding M7, against a real server: every protocol enters the service through one
call that routes, validates, predicts, logs and feeds the shadows. MLflow's /invocations and the Open Inference
Protocol's infer are routed by X-Routing-Key exactly like /predict (sticky, the same variant as the in-process
split), logged with that key, and shadowed; a v2 path that names a version is answered by the variant serving
that version, never by a random draw; every route reads its body with one reader (415 for a compressed body)."""

from __future__ import annotations

import gzip
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from shipml.adapters.store import PredictionStore
from shipml.core.routing import Split
from tests.support.project import TrainedProject, train_project
from tests.support.server import Server, records, start_server

pytestmark = [pytest.mark.integration]

SALT = "entry-point"
EXPERIMENT = f"""
serve:
  salt: {SALT}
  reload_interval_s: 0
  variants:
    - {{name: champion, model: churn/1, weight: 0.5}}
    - {{name: challenger, model: churn/2, weight: 0.5}}
  shadow:
    - {{name: candidate, model: churn/2, fraction: 1.0}}
auth:
  enabled: false
"""
SPLIT = Split([("champion", 0.5), ("challenger", 0.5)], SALT)
VERSION = {"champion": "1", "challenger": "2"}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Server]]:
    project: TrainedProject = train_project(tmp_path_factory.mktemp("entry-point"))
    assert project.train() == "2"
    root = project.workspace(project.root / "serving", EXPERIMENT)
    server = start_server(root)
    try:
        yield root, server
    finally:
        assert server.stop() == 0


def stored(root: Path) -> PredictionStore:
    return PredictionStore(f"sqlite:///{root}/.shipml/predictions.db")


def v2_body(n: int) -> dict[str, object]:
    """An infer request of ``n`` example records, one JSON tensor per feature (records without missing values)."""
    rows = [r for r in records(50) if None not in r.values()][:n]
    inputs = []
    for name in rows[0]:
        values = [r[name] for r in rows]
        text = any(isinstance(v, str) for v in values)
        inputs.append({"name": name, "datatype": "BYTES" if text else "FP64", "shape": [n], "data": values})
    return {"inputs": inputs}


def test_a_version_path_is_answered_by_the_variant_serving_that_version(served: tuple[Path, Server]) -> None:
    """Review M7: during an experiment, v2 paths naming a version answered 404 for the other variant's share."""
    _, server = served
    for version in ("1", "2"):
        ready = Counter(
            requests.get(f"{server.url}/v2/models/churn/versions/{version}/ready", timeout=10).status_code
            for _ in range(30)
        )
        assert ready == {200: 30}, (version, ready)
        answers = [
            requests.post(f"{server.url}/v2/models/churn/versions/{version}/infer", json=v2_body(3), timeout=10)
            for _ in range(20)
        ]
        assert {a.status_code for a in answers} == {200}, answers[0].text
        assert {a.json()["model_version"] for a in answers} == {version}
    unknown = requests.get(f"{server.url}/v2/models/churn/versions/9/ready", timeout=10)
    assert unknown.status_code == 404 and "served at version 1, 2" in unknown.json()["error"]
    # the model's metadata describes the champion, the same on every call
    announced = {requests.get(f"{server.url}/v2/models/churn", timeout=10).json()["versions"][0] for _ in range(20)}
    assert announced == {"1"}


def test_invocations_and_v2_infer_are_routed_by_key_logged_with_it_and_shadowed(served: tuple[Path, Server]) -> None:
    root, server = served
    since = time.time()
    keys = [f"customer-{i}" for i in range(40)]
    for key in keys:
        headers = {"X-Routing-Key": key}
        mlflow = requests.post(
            f"{server.url}/invocations", json={"dataframe_records": records(2)}, headers=headers, timeout=10
        )
        assert mlflow.status_code == 200, mlflow.text
        assert mlflow.headers["X-Model-Version"] == VERSION[SPLIT.variant(key)]  # the in-process split's answer
        v2 = requests.post(f"{server.url}/v2/models/churn/infer", json=v2_body(2), headers=headers, timeout=10)
        assert v2.status_code == 200, v2.text
        assert v2.json()["model_version"] == VERSION[SPLIT.variant(key)]
    store = stored(root)
    try:

        def keyed_shadows() -> int:
            logged = store.predictions.read_outcomes("churn", since, time.time() + 1, role="shadow").keys
            return sum(1 for k in logged.tolist() if k is not None)

        # the shadow scores its copies off the response path (and may still be scoring the unkeyed copies of the
        # test before, which count as rows since `since` too: so wait for the keyed ones)
        deadline = time.monotonic() + 30
        while keyed_shadows() < 4 * len(keys):
            assert time.monotonic() < deadline, "the shadow never scored the copies"
            time.sleep(0.2)
        for role in ("primary", "shadow"):
            logged = store.predictions.read_outcomes("churn", since, time.time() + 1, role=role).keys
            # 2 records x 2 protocols per key (the shadow may still be scoring the unkeyed copies of the test before)
            assert Counter(k for k in logged.tolist() if k is not None) == dict.fromkeys(keys, 4), role
        window = store.predictions.read_window("churn", since, time.time() + 1)
        for variant in ("champion", "challenger"):
            expected = 4 * sum(1 for k in keys if SPLIT.variant(k) == variant)
            assert int((window.variant == variant).sum()) == expected
    finally:
        store.close()


@pytest.mark.parametrize("path", ["/predict", "/predict/batch", "/invocations", "/v2/models/churn/infer"])
def test_a_compressed_body_is_415_on_every_route(served: tuple[Path, Server], path: str) -> None:
    _, server = served
    body = gzip.compress(b'{"features": {}}')
    headers = {"Content-Type": "application/json", "Content-Encoding": "gzip"}
    answer = requests.post(f"{server.url}{path}", data=body, headers=headers, timeout=10)
    assert answer.status_code == 415, answer.text
    assert "Content-Encoding 'gzip' is not supported" in answer.text
