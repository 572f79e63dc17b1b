"""The prediction store on a real PostgreSQL: typed slots, group commit, feedback, and the service on it."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import requests

from shipml.adapters.store import PredictionStore, StoreWriter
from shipml.core.schema import FeatureSchema
from shipml.examples.churn import generate_churn
from tests.support.dialects import fresh_postgres_database
from tests.support.logged import logged
from tests.support.project import CONFIG, train_project
from tests.support.server import make_keys, records, start_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_store_on_postgres(postgres_uri: str) -> None:
    uri = fresh_postgres_database(postgres_uri)
    store = PredictionStore(uri)
    schema = FeatureSchema.infer(generate_churn(200), "churn", id_columns=("customer_id",))
    slots = store.predictions.register_schema(schema)
    assert store.predictions.register_schema(schema) == slots  # idempotent
    writer = StoreWriter(store, queue_size=50_000, batch_max=512)
    started = time.perf_counter()
    futures = [
        writer.submit(
            logged(
                f"pg-{i}",
                float(i),
                "churn",
                "1",
                "main",
                {"tenure": float(i), "contract": "one-year"},
                {"predicted_class": "1", "probabilities": {"0": 0.25, "1": 0.75}},
                0.5,
                schema_sha256=slots.schema_sha256,
            )
        )
        for i in range(20_000)
    ]
    for f in futures:
        f.result(timeout=120)
    elapsed = time.perf_counter() - started
    writer.close()
    assert store.predictions.count() == 20_000
    window = store.predictions.read_window("churn", 0, 20_000)
    assert window.features["tenure"].tolist() == [float(i) for i in range(20_000)]
    assert set(window.features["contract"].tolist()) == {"one-year"}
    assert set(window.label.tolist()) == {"1"} and set(window.score.tolist()) == {0.75}
    assert store.feedback.add("pg-7", "1", None) and not store.feedback.add("nope", "1", None)
    print(f"postgres group commit: {20_000 / elapsed:,.0f} rows/s")
    store.close()


def test_service_logs_to_postgres_and_survives_sigkill(postgres_uri: str, tmp_path: Path) -> None:
    train_project(tmp_path, rows=1_500)
    keys, auth = make_keys()
    (tmp_path / "shipml.yaml").write_text(CONFIG + auth + f"store:\n  uri: {postgres_uri}\n")
    server = start_server(tmp_path)
    ids = []
    for row in records(40):
        r = requests.post(
            f"{server.url}/predict", json={"features": row}, headers={"X-API-Key": keys.predict}, timeout=10
        )
        assert r.status_code == 200, r.text
        ids.append(r.json()["prediction_id"])
    server.stop(signal.SIGKILL)
    store = PredictionStore(postgres_uri)
    found = [pid for pid in ids if store.predictions.get(pid) is not None]
    store.close()
    assert len(found) == 40
