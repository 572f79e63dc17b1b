"""/feedback in-process (create_app with its store, through the ASGI interface): the answers a client relies on
when the store fails, for ids it cannot know, and for values that are not numbers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from shipml.adapters.store import PredictionStore
from shipml.config import Settings
from shipml.server.app import create_app
from tests.support.project import TrainedProject
from tests.support.server import records

RECORD = records(1)[0]


def service_settings(project: TrainedProject, home: Path, **overrides: Any) -> Settings:
    return project.settings(
        serve={"model": "churn@production"},
        auth={"enabled": False},
        store={"uri": f"sqlite:///{home}/predictions.db", **overrides.pop("store", {})},
        home=str(home),
        **overrides,
    )


@pytest.fixture
def served(trained_project: TrainedProject, tmp_path: Path) -> Iterator[tuple[TestClient, PredictionStore]]:
    settings = service_settings(trained_project, tmp_path)
    store = PredictionStore(settings.store.uri)
    app = create_app(settings, registry=trained_project.registry(), store=store)
    with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as client:
        yield client, store
    store.close()


def predicted(client: TestClient) -> str:
    answer = client.post("/predict", json={"features": RECORD})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["prediction_id"])


def test_feedback_for_a_logged_prediction_is_recorded(served: tuple[TestClient, PredictionStore]) -> None:
    client, store = served
    pid = predicted(client)
    answer = client.post("/feedback", json={"prediction_id": pid, "label": "1"})
    assert (answer.status_code, answer.json()) == (200, {"prediction_id": pid, "recorded": True})
    assert store.feedback.get(pid) is not None


def test_feedback_while_the_store_fails_is_503_store_unavailable(served: tuple[TestClient, PredictionStore]) -> None:
    """L1: the store failing is the server's fault, to retry later: 503 store_unavailable, never a 500."""
    client, store = served
    pid = predicted(client)
    with store.database.engine.begin() as conn:  # the feedback table gone from under the running service
        conn.execute(sa.text("ALTER TABLE feedback RENAME TO feedback_away"))
    answer = client.post("/feedback", json={"prediction_id": pid, "label": "1"})
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"]["code"] == "store_unavailable"
