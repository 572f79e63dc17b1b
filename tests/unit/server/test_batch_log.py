"""/predict/batch's log of a clean batch, in-process (create_app with its store): one unit of columns, one commit,
durable before the answer, and counted into the drift histograms as its records."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from shipml.adapters.store import PredictionStore
from shipml.server.app import create_app
from tests.support.project import TrainedProject
from tests.support.server import records
from tests.unit.server.test_feedback import service_settings


def test_a_clean_batch_of_10000_records_is_one_commit_before_its_answer(
    trained_project: TrainedProject, tmp_path: Path
) -> None:
    """Before: 10,000 records were logged in chunks of 2,048 (five units, each a commit of its own, as the
    writer's batch_max is 512) and held a Prediction each."""
    settings = service_settings(trained_project, tmp_path, store={"durability": "commit"})
    store = PredictionStore.open(settings.store)
    writes: list[list[int]] = []
    write = store.predictions.write

    def counted(units: Sequence[Any]) -> None:
        writes.append([len(unit) for unit in units])
        write(units)

    store.predictions.write = counted  # type: ignore[method-assign]
    batch = (records(500) * 20)[:10_000]
    app = create_app(settings, registry=trained_project.registry(), store=store)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        answer = client.post("/predict/batch", json={"records": batch})
        assert answer.status_code == 200, answer.text[:300]
        assert writes == [[10_000]]  # committed before the answer: one commit of one unit
        got: list[dict[str, Any]] = answer.json()["predictions"]
        assert [p["index"] for p in got] == list(range(10_000)) and answer.json()["failed"] == 0
        assert store.predictions.count() == 10_000
        for k in (0, 4_321, 9_999):
            stored = store.predictions.get(got[k]["prediction_id"])
            assert stored is not None
            # the log keeps a label as text
            assert stored.outputs() == {"predicted_class": str(got[k]["predicted_class"]),
                                        "probabilities": got[k]["probabilities"]}  # fmt: skip
    # the service stopped: its writer flushed the drift histograms, every record counted once
    minutes = store.histograms.read("churn", 0, time.time() + 120)
    assert sum(m.rows for m in minutes) == 10_000
    assert all(int(sum(counts)) == m.rows for m in minutes for counts in m.counts.values())
    store.close()
