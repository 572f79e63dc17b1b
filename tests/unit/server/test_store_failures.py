"""What a client and an operator see when the prediction log cannot be written, in-process (create_app)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from starlette.testclient import TestClient

from shipml.adapters.store import PredictionStore
from shipml.core.prediction import Prediction
from shipml.server.app import create_app
from tests.support.project import TrainedProject
from tests.unit.server.test_feedback import RECORD, service_settings


def test_async_durability_counts_the_rows_a_failed_commit_lost(trained_project: TrainedProject, tmp_path: Path) -> None:
    """L6: answered predictions whose rows could not be written are counted in rows, not in commits."""
    # the failed commit is retried for store.async_retry_s before its rows are dropped: a short retry here
    settings = service_settings(trained_project, tmp_path, store={"durability": "async", "async_retry_s": 0.5})
    store = PredictionStore.open(settings.store)
    app = create_app(settings, registry=trained_project.registry(), store=store)
    with TestClient(app, base_url="http://127.0.0.1") as client:

        def broken(units: Sequence[Sequence[Prediction]]) -> None:
            raise RuntimeError("disk gone")

        store.predictions.write = broken  # type: ignore[method-assign]
        batch = client.post("/predict/batch", json={"records": [RECORD] * 5})
        assert batch.status_code == 200, batch.text  # answered at once: async durability
        exposition = ""
        for _ in range(200):  # the writer's next window (store.async_window_ms)
            exposition = client.get("/metrics").text
            if "shipml_store_rows_dropped_total 5.0" in exposition:
                break
            time.sleep(0.05)
        assert "shipml_store_rows_dropped_total 5.0" in exposition
    store.close()
