"""/feedback in-process (create_app with its store, through the ASGI interface): the answers a client relies on
when the store fails, for ids it cannot know, and for values that are not numbers."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from httpx import Response
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


FUTURE_V7 = "03c8fe86-f4f5-7000-8000-000000003039"  # a version-7 UUID whose time lies around the year 2100


def answered(send: Callable[[], Response], within_s: float = 60.0) -> Response:
    """``send()``'s answer, or a failure when none came (a handler looping forever) within a generous bound."""
    got: list[Response] = []
    thread = threading.Thread(target=lambda: got.append(send()), daemon=True)
    thread.start()
    thread.join(within_s)
    if not got:
        pytest.fail(f"no answer within {within_s:g} s")
    return got[0]


def test_feedback_for_an_id_from_the_future_is_404_without_waiting_forever(
    served: tuple[TestClient, PredictionStore],
) -> None:
    """M1: an id of another system, or a typo, with a version-7 shape and a future time is not waited for (it is
    never "made a moment ago"): 404 at once, the admission slot given back."""
    client, _ = served
    answer = answered(lambda: client.post("/feedback", json={"prediction_id": FUTURE_V7, "label": "1"}))
    assert answer.status_code == 404, answer.text
    assert answer.json()["error"]["code"] == "unknown_prediction"


class _Hung:
    """The store's feedback part as a hung database makes it: a call returns only once ``release`` is set."""

    def __init__(self, release: threading.Event) -> None:
        self.release = release

    def add(self, prediction_id: str, label: str | None, value: float | None) -> bool:
        self.release.wait(120)
        return True


def test_feedback_held_up_by_a_hung_store_answers_503_at_its_deadline(
    trained_project: TrainedProject, tmp_path: Path
) -> None:
    """M1: whatever holds the store up, /feedback answers within store.feedback_timeout_s: 503 store_unavailable,
    to retry (before, the request waited as long as the store did)."""
    settings = service_settings(trained_project, tmp_path, store={"feedback_timeout_s": 1.0, "feedback_wait_s": 0.5})
    store = PredictionStore.open(settings.store)
    release = threading.Event()
    app = create_app(settings, registry=trained_project.registry(), store=store)
    with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as client:
        pid = predicted(client)
        store.feedback = _Hung(release)  # type: ignore[assignment]
        try:
            answer = answered(lambda: client.post("/feedback", json={"prediction_id": pid, "label": "1"}))
        finally:
            release.set()
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"]["code"] == "store_unavailable"
    store.close()


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e999"])
def test_a_feedback_value_that_is_not_a_finite_number_is_422_naming_it(
    served: tuple[TestClient, PredictionStore], number: bytes
) -> None:
    """M5: one NaN or infinite value would make the window's realised rmse NaN, and the drop alarm silent."""
    client, store = served
    pid = predicted(client)
    body = b'{"prediction_id": "%s", "value": %s}' % (pid.encode(), number)
    answer = client.post("/feedback", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 422, answer.text
    assert "`value`" in answer.json()["error"]["message"]
    assert store.feedback.get(pid) is None
