"""``create_app(settings, registry=..., store=...)``: the service built over a registry and a store it is handed
serves from that registry, logs into that store and leaves it open at shutdown (its owner closes it); requests
reach it in-process through httpx's ASGI transport."""

from __future__ import annotations

from pathlib import Path

import pytest

from shipml.adapters.store import PredictionStore
from shipml.config import load_settings
from tests.support.asgi import serve_in_process
from tests.support.project import TrainedProject
from tests.support.server import auth, make_keys, records

pytestmark = pytest.mark.integration


def test_the_app_serves_from_the_registry_and_logs_into_the_store_it_is_given(
    trained_project: TrainedProject, tmp_path: Path
) -> None:
    keys, auth_yaml = make_keys()
    root = trained_project.workspace(tmp_path / "ws", auth_yaml + "serve:\n  reload_interval_s: 0\n")
    settings = load_settings(root / "shipml.yaml", overrides={"home": str(root / ".shipml")})
    store = PredictionStore(f"sqlite:///{tmp_path}/given.db")
    try:
        with serve_in_process(settings, registry=trained_project.registry(), store=store) as service:
            assert service.get("/health/ready").status_code == 200
            answer = service.post("/predict", json={"features": records(1)[0]}, headers=auth(keys.predict))
            assert answer.status_code == 200, answer.text
            assert answer.json()["model"] == {"name": "churn", "version": "1", "variant": "main"}
            refused = service.post(
                "/predict", content=b'{"features": ', headers=auth(keys.predict) | {"Content-Type": "application/json"}
            )
            assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_json"
            assert service.post("/predict", json={}).status_code == 401
        # shut down: the row is flushed into the given store, which is still open for its owner
        assert store.predictions.get(answer.json()["prediction_id"]) is not None
    finally:
        store.close()
    assert not (root / ".shipml" / "predictions.db").exists()  # the store the settings name was never opened
