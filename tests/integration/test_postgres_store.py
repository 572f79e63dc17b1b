"""The prediction store on a real PostgreSQL: typed columns, group commit, feedback, and the service on it."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

from shipml.adapters.prediction_store import PredictionRow, PredictionStore, StoreWriter
from shipml.core.schema import FeatureSchema
from shipml.examples.churn import generate_churn
from tests.integration.cli import shipml
from tests.integration.server import CONFIG, make_keys, start_server
from tests.integration.test_serve import records

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_store_on_postgres(postgres_uri: str) -> None:
    store = PredictionStore(postgres_uri)
    schema = FeatureSchema.infer(generate_churn(200), "churn", id_columns=("customer_id",))
    store.ensure_features(schema)
    store.ensure_features(schema)  # idempotent
    writer = StoreWriter(store, queue_size=50_000, batch_max=512)
    started = time.perf_counter()
    futures = [
        writer.submit(
            PredictionRow(
                f"pg-{i}",
                time.time(),
                "churn",
                "1",
                "main",
                {"tenure": float(i), "contract": "one-year"},
                {"p": 0.1},
                0.5,
            )
        )
        for i in range(20_000)
    ]
    for f in futures:
        f.result(timeout=120)
    elapsed = time.perf_counter() - started
    writer.close()
    assert store.count() >= 20_000
    row = store.get("pg-7")
    assert row is not None and row["f_tenure"] == 7.0 and row["f_contract"] == "one-year"
    assert store.add_feedback("pg-7", "1", None) and not store.add_feedback("nope", "1", None)
    with store.engine.connect() as conn:
        types = {c["name"]: str(c["type"]) for c in sa.inspect(conn).get_columns("predictions")}
    assert types["f_tenure"] in ("DOUBLE PRECISION", "FLOAT") and types["f_contract"] == "TEXT"
    print(f"postgres group commit: {20_000 / elapsed:,.0f} rows/s")


def test_service_logs_to_postgres_and_survives_sigkill(postgres_uri: str, tmp_path: Path) -> None:
    assert shipml(tmp_path, "quickstart", "--rows", "1500").returncode == 0
    keys, auth = make_keys(tmp_path)
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
    engine = sa.create_engine(postgres_uri)
    with engine.connect() as conn:
        found = conn.execute(
            sa.text("SELECT count(*) FROM predictions WHERE id = ANY(:ids)"), {"ids": ids}
        ).scalar_one()
    engine.dispose()
    assert found == 40
