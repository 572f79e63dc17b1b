"""Issue 11, items 1-3, against real server processes: variants in the config, sticky routing by key across
processes, every answer and store row carrying its variant, and shadows scoring copies off the response path."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from shipml.adapters.store import PredictionStore
from shipml.core.routing import Split
from tests.support.cli import one_error_line, shipml
from tests.support.project import train_project
from tests.support.server import Server, records, start_server

pytestmark = [pytest.mark.integration]

EXPERIMENT = """
serve:
  salt: experiment-1
  reload_interval_s: 0
  variants:
    - {name: champion, model: churn@production, weight: 0.8}
    - {name: challenger, model: churn/1, weight: 0.2}
  shadow:
    - {name: candidate, model: churn/1, fraction: 0.25}
"""
SPLIT = Split([("champion", 0.8), ("challenger", 0.2)], "experiment-1")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("experiments")
    train_project(root)
    (root / "shipml.yaml").write_text(EXPERIMENT)
    return root


@pytest.fixture(scope="module")
def servers(project: Path) -> Iterator[tuple[Server, Server]]:
    env = {"SHIPML_AUTH__ENABLED": "false"}
    first = start_server(project, env=env)
    second = start_server(project, "--workers", "2", env=env)
    try:
        yield first, second
    finally:
        assert first.stop() == 0 and second.stop() == 0


def assigned(server: Server, keys: list[str]) -> list[str]:
    rows = records(200)
    out: list[str] = []
    for lo in range(0, len(keys), 2000):
        chunk = [{"features": rows[i % 200], "id": k} for i, k in enumerate(keys[lo : lo + 2000], lo)]
        answer = requests.post(f"{server.url}/predict/batch", json={"records": chunk}, timeout=60)
        assert answer.status_code == 200, answer.text
        predictions = answer.json()["predictions"]
        assert all(p["routed_by"] == "key" for p in predictions)
        out += [p["variant"] for p in predictions]
    return out


def test_a_key_lands_on_the_same_variant_in_every_process(servers: tuple[Server, Server]) -> None:
    first, second = servers
    keys = [f"customer-{i}" for i in range(10_000)]
    one, other = assigned(first, keys), assigned(second, keys)
    assert one == other == [SPLIT.variant(k) for k in keys]
    shares = Counter(one)
    assert 0.77 < shares["champion"] / len(keys) < 0.83


def test_one_record_is_routed_by_its_id_or_the_header_and_says_so(servers: tuple[Server, Server]) -> None:
    first, _ = servers
    features = records(1)[0]
    for key in ("alice", "bob", "carol", "dave"):
        answer = requests.post(f"{first.url}/predict", json={"features": features, "id": key}, timeout=10).json()
        assert answer["model"]["variant"] == SPLIT.variant(key) and answer["routed_by"] == "key"
        by_header = requests.post(
            f"{first.url}/predict", json={"features": features}, headers={"X-Routing-Key": key}, timeout=10
        ).json()
        assert by_header["model"]["variant"] == SPLIT.variant(key)
    unkeyed = [requests.post(f"{first.url}/predict", json={"features": features}, timeout=10).json() for _ in range(60)]
    assert {a["routed_by"] for a in unkeyed} == {"random"}
    assert {a["model"]["variant"] for a in unkeyed} == {"champion", "challenger"}


def test_rows_metrics_and_model_carry_the_variant_and_shadows_log_their_copies(
    project: Path, servers: tuple[Server, Server]
) -> None:
    first, _ = servers
    keys = [f"shadowed-{i}" for i in range(400)]
    answers = assigned(first, keys)
    store = PredictionStore(f"sqlite:///{project}/.shipml/predictions.db")
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and store.predictions.count("churn", role="shadow", variant="candidate") == 0:
            time.sleep(0.2)
        time.sleep(1.0)  # the shadow's copies are logged after the answers, off the response path
        primary = store.predictions.read_window("churn", 0, time.time() + 1)
        assert set(primary.variant.tolist()) == {"champion", "challenger"}
        shadow = store.predictions.read_window("churn", 0, time.time() + 1, role="shadow")
        assert set(shadow.variant.tolist()) == {"candidate"}
        assert 0.15 < len(shadow) / len(primary) < 0.35  # a quarter of the requests, sampled per key
    finally:
        store.close()
    assert Counter(answers)["challenger"] > 0
    model = requests.get(f"{first.url}/model", timeout=10).json()
    assert [v["variant"] for v in model["variants"]] == ["champion", "challenger"]
    assert [v["weight"] for v in model["variants"]] == [0.8, 0.2]
    assert [(s["variant"], s["role"], s["fraction"]) for s in model["shadows"]] == [("candidate", "shadow", 0.25)]
    metrics = requests.get(f"{first.url}/metrics", timeout=10).text
    for variant in ("champion", "challenger", "candidate"):
        assert f'variant="{variant}"' in metrics


def test_bad_variants_are_one_line_errors(project: Path) -> None:
    bad = project / "bad.yaml"
    bad.write_text(EXPERIMENT.replace("weight: 0.2", "weight: 0.3"))
    line = one_error_line(shipml(project, "serve", "--config", str(bad)))
    assert "serve.variants: weights must sum to 1" in line
