"""`shipml serve` as a real process, spoken to over HTTP by real clients."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import requests

from shipml.adapters.registry import MlflowRegistry, ModelRef
from shipml.adapters.store import PredictionStore
from shipml.config import load_settings
from shipml.examples.churn import FEATURES
from shipml.pipelines.data import feature_frame
from shipml.pipelines.predict import load_schema
from tests.support.project import TrainedProject
from tests.support.server import Keys, Server, auth, make_keys, records, start_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, trained_project: TrainedProject) -> tuple[Path, Keys]:
    keys, auth = make_keys()
    serve = "serve:\n  reload_interval_s: 1\n  max_batch: 2000\n  max_body_bytes: 2000000\n"
    return trained_project.workspace(tmp_path_factory.mktemp("serve"), auth + serve), keys


@pytest.fixture(scope="module")
def server(project: tuple[Path, Keys]) -> Iterator[Server]:
    s = start_server(project[0])
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="module")
def keys(project: tuple[Path, Keys]) -> Keys:
    return project[1]


def pipeline_proba(project: Path, rows: list[dict[str, object]]) -> np.ndarray:
    """churn/1's own pipeline on ``rows``, loaded from the registry ``project``'s shipml.yaml names."""
    registry = MlflowRegistry(load_settings(project / "shipml.yaml").registry)
    loaded = registry.load(ModelRef.parse("churn/1"), project / ".shipml" / "test-cache")
    frame = feature_frame(pd.DataFrame(rows), load_schema(loaded))
    return np.asarray(loaded.pipeline.predict_proba(frame))


def test_predict_matches_the_pipeline_on_1000_rows(server: Server, keys: Keys, project: tuple[Path, Keys]) -> None:
    rows = records(1000)
    expected = pipeline_proba(project[0], rows)
    got = []
    with requests.Session() as http:
        for row in rows:
            r = http.post(f"{server.url}/predict", json={"features": row}, headers=auth(keys.predict), timeout=10)
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["model"] == {"name": "churn", "version": "1", "variant": "main"}
            assert r.headers["x-model-version"] == "1"
            got.append([body["probabilities"]["0"], body["probabilities"]["1"]])
            assert body["predicted_class"] == int(np.argmax(got[-1]))
    np.testing.assert_array_equal(np.asarray(got), expected)
    batch = requests.post(
        f"{server.url}/predict/batch", json={"records": rows}, headers=auth(keys.predict), timeout=30
    ).json()
    probs = np.asarray([[p["probabilities"]["0"], p["probabilities"]["1"]] for p in batch["predictions"]])
    np.testing.assert_array_equal(probs, expected)
    assert len({p["prediction_id"] for p in batch["predictions"]}) == 1000


def test_batch_answers_in_order_with_per_record_errors(server: Server, keys: Keys) -> None:
    rows = records(5)
    rows[1] = rows[1] | {"contract": "lifetime"}
    rows[3] = {"tenure": 1}
    r = requests.post(f"{server.url}/predict/batch", json={"records": rows}, headers=auth(keys.predict), timeout=10)
    assert r.status_code == 200
    body = r.json()
    assert [p["index"] for p in body["predictions"]] == [0, 1, 2, 3, 4]
    assert body["failed"] == 2
    assert body["predictions"][1]["error"]["details"] == [
        {
            "record": 1,
            "feature": "contract",
            "rule": "unknown_category",
            "message": "'lifetime' is not one of the trained categories",
        }
    ]
    assert {d["rule"] for d in body["predictions"][3]["error"]["details"]} == {"missing"}
    assert "prediction_id" in body["predictions"][4]
    too_many = requests.post(
        f"{server.url}/predict/batch", json={"records": records(1) * 2001}, headers=auth(keys.predict), timeout=10
    )
    assert too_many.status_code == 413 and too_many.json()["error"]["code"] == "batch_too_large"


@pytest.mark.parametrize(
    ("change", "feature", "rule"),
    [
        ({"age": None}, "age", "not_nullable"),
        ({"extra": 1}, "extra", "unknown_feature"),
        ({"tenure": "3"}, "tenure", "type"),
        ({"tenure": 500}, "tenure", "max"),
        ({"tenure": 2.5}, "tenure", "whole_number"),
        ({"contract": "weekly"}, "contract", "unknown_category"),
        ({"gender": {"a": [1]}}, "gender", "type"),
        ({"data_gb": True}, "data_gb", "type"),
    ],
)
def test_invalid_features_are_422_naming_record_feature_rule(
    server: Server, keys: Keys, change: dict[str, object], feature: str, rule: str
) -> None:
    r = requests.post(
        f"{server.url}/predict", json={"features": records(1)[0] | change}, headers=auth(keys.predict), timeout=10
    )
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["code"] == "validation_error"
    assert {"record": 0, "feature": feature, "rule": rule} == {
        k: error["details"][0][k] for k in ("record", "feature", "rule")
    }


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b'{"features": {"tenure": NaN}}', 422),  # a value, not syntax: the validator names the feature
        (b'{"features": {"tenure": Infinity}}', 422),
        (b'{"features": {"tenure": 1e999}}', 422),
        (b"", 422),
        (b'{"features": {"gender": "\\ud800"}}', 400),
        (b"not json", 400),
        (b"[" * 5000 + b"]" * 5000, 400),
        (b'{"features": ' + b'{"a":' * 2000 + b"1" + b"}" * 2000 + b"}", 400),
        (b'{"features": [1, 2]}', 422),
        (b'{"feature": {}}', 422),
        (b'{"features": {"x": "' + b"a" * 2_100_000 + b'"}}', 413),
    ],
)
def test_malformed_bodies_are_4xx_never_500(server: Server, keys: Keys, body: bytes, status: int) -> None:
    r = requests.post(
        f"{server.url}/predict",
        data=body,
        headers=auth(keys.predict) | {"Content-Type": "application/json"},
        timeout=10,
    )
    assert r.status_code == status, r.text
    assert set(r.json()["error"]) >= {"code", "message"}
    assert "Traceback" not in r.text


def test_auth_roles_and_open_health(server: Server, keys: Keys, project: tuple[Path, Keys]) -> None:
    row = {"features": records(1)[0]}
    assert requests.post(f"{server.url}/predict", json=row, timeout=10).status_code == 401
    assert (
        requests.post(f"{server.url}/predict", json=row, headers=auth("sk_shipml_wrong"), timeout=10).status_code == 401
    )
    assert (
        requests.post(f"{server.url}/predict", json=row, headers={"X-API-Key": keys.predict}, timeout=10).status_code
        == 200
    )
    assert requests.post(f"{server.url}/admin/reload", headers=auth(keys.predict), timeout=10).status_code == 403
    assert (
        requests.post(
            f"{server.url}/feedback", json={"prediction_id": "x", "label": "1"}, headers=auth(keys.predict), timeout=10
        ).status_code
        == 403
    )
    assert requests.post(f"{server.url}/admin/reload", headers=auth(keys.admin), timeout=30).json()["changed"] is False
    for path in ("/health/live", "/health/ready", "/v2/health/live", "/v2/health/ready", "/v2/models/churn/ready"):
        assert requests.get(f"{server.url}{path}", timeout=10).status_code == 200, path
    assert (
        "access-control-allow-origin"
        not in requests.get(f"{server.url}/health/live", headers={"Origin": "https://evil.example"}, timeout=10).headers
    )
    time.sleep(0.5)  # request lines are written in bursts, within serve's 0.2 s log interval
    log = server.log.read_text()
    assert keys.predict not in log and keys.admin not in log
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert any(line.get("event") == "request" and line.get("key") == "app" for line in lines)  # who, by name


def test_model_description_and_openapi(server: Server, keys: Keys) -> None:
    model = requests.get(f"{server.url}/model", headers=auth(keys.predict), timeout=10).json()
    assert {model["name"], model["version"], model["task"]} == {"churn", "1", "binary"}
    assert model["run_id"] and model["trained_at"] and model["metrics"]["roc_auc"] > 0.75
    assert model["predictor"] == "fast"
    assert model["fast_path"].startswith("verified: exact on ")
    # the native kernel serves where it was verified and this machine has it, else numpy
    assert model["backend"] == model["fast_path"].split("backends: ")[1].split(", ")[-1]
    assert [f["name"] for f in model["schema"]["features"]] == list(FEATURES)
    spec = requests.get(f"{server.url}/openapi.json", timeout=10).json()
    features = spec["components"]["schemas"]["Features"]
    assert features["properties"]["contract"] == {"type": "string", "enum": ["month-to-month", "one-year", "two-year"]}
    assert features["properties"]["tenure"]["type"] == "integer"
    assert features["additionalProperties"] is False
    assert (
        spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        == "#/components/schemas/PredictRequest"
    )


def test_metrics_exposition(server: Server, keys: Keys) -> None:
    requests.post(f"{server.url}/predict", json={"features": records(1)[0]}, headers=auth(keys.predict), timeout=10)
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    for name in (
        "shipml_requests_total",
        "shipml_request_latency_seconds_bucket",
        "shipml_predictions_total",
        "shipml_model_info",
    ):
        assert name in text, name
    assert 'shipml_model_info{model="churn",variant="main",version="1"} 1.0' in text


def test_mlflow_scoring_protocol_all_four_formats(server: Server, keys: Keys, project: tuple[Path, Keys]) -> None:
    rows = records(20, seed=5)
    expected = np.argmax(pipeline_proba(project[0], rows), axis=1).tolist()
    columns = FEATURES
    payloads = [
        {"dataframe_split": {"columns": columns, "data": [[r[c] for c in columns] for r in rows]}},
        {"dataframe_records": rows},
        {"instances": rows},
        {"inputs": {c: [r[c] for r in rows] for c in columns}},
    ]
    for payload in payloads:
        r = requests.post(f"{server.url}/invocations", json=payload, headers=auth(keys.predict), timeout=10)
        assert r.status_code == 200, r.text
        assert r.json() == {"predictions": expected}, list(payload)
    bad = requests.post(
        f"{server.url}/invocations",
        json={"dataframe_records": [rows[0] | {"age": "x"}]},
        headers=auth(keys.predict),
        timeout=10,
    )
    assert bad.status_code == 422
    assert bad.json()["error_code"] == "BAD_REQUEST" and bad.json()["error"]["details"][0]["feature"] == "age"


def test_every_prediction_is_logged_and_feedback_joins(server: Server, keys: Keys, project: tuple[Path, Keys]) -> None:
    store = PredictionStore(f"sqlite:///{project[0] / '.shipml' / 'predictions.db'}")
    try:
        before = store.predictions.count()
        r = requests.post(
            f"{server.url}/predict", json={"features": records(1)[0]}, headers=auth(keys.predict), timeout=10
        ).json()
        got = store.predictions.get(r["prediction_id"])  # committed before the answer (durability: commit)
        assert got is not None and store.predictions.count() == before + 1
        s = got.served
        assert (s.model, s.version, s.variant, s.role) == ("churn", "1", "main", "primary")
        assert got.features["contract"] == records(1)[0]["contract"]
        assert got.probabilities == r["probabilities"]
        assert got.label == r["predicted_class"]
        # typed, through the store's catalog of the model's schema
        window = store.predictions.read_window("churn", got.ts - 1, got.ts + 1)
        at = list(window.ids).index(r["prediction_id"])
        assert window.features["contract"][at] == records(1)[0]["contract"]
        assert window.features["tenure"][at] == records(1)[0]["tenure"]
        ok = requests.post(
            f"{server.url}/feedback",
            json={"prediction_id": r["prediction_id"], "label": 1},
            headers=auth(keys.admin),
            timeout=10,
        )
        assert ok.status_code == 200
        missing = requests.post(
            f"{server.url}/feedback",
            json={"prediction_id": "0190-nope", "label": 1},
            headers=auth(keys.admin),
            timeout=10,
        )
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "unknown_prediction"
        feedback = store.feedback.get(r["prediction_id"])
        assert feedback is not None and feedback.label == "1"
    finally:
        store.close()


def test_unknown_paths_and_methods_answer_in_the_error_shape(server: Server, keys: Keys) -> None:
    r = requests.get(f"{server.url}/no/such/path", headers=auth(keys.predict), timeout=10)
    assert r.status_code == 404
    assert r.json() == {"error": {"code": "not_found", "message": "no such endpoint; see /openapi.json"}}
    r = requests.get(f"{server.url}/predict/batch", headers=auth(keys.predict), timeout=10)
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    assert "POST" in r.headers["allow"]


def test_feedback_refuses_bad_labels_with_422_and_takes_long_ones_up_to_the_limit(server: Server, keys: Keys) -> None:
    made = requests.post(
        f"{server.url}/predict", json={"features": records(1)[0]}, headers=auth(keys.predict), timeout=10
    ).json()
    pid = made["prediction_id"]
    for body, fragment in (
        ({"prediction_id": pid, "label": "x" * 1001}, "at most 1000"),
        ({"prediction_id": pid, "label": {"a": 1}}, "`label` must be"),
        ({"prediction_id": pid, "value": True}, "`value` must be a number"),
        ({"prediction_id": pid, "label": 1, "value": 1.0}, "exactly one"),
        ({"prediction_id": "x" * 65, "label": 1}, "1 to 64 characters"),
    ):
        r = requests.post(f"{server.url}/feedback", json=body, headers=auth(keys.admin), timeout=10)
        assert r.status_code == 422, (body, r.text)
        assert fragment in r.json()["error"]["message"]
    ok = requests.post(
        f"{server.url}/feedback", json={"prediction_id": pid, "label": "y" * 1000}, headers=auth(keys.admin), timeout=10
    )
    assert ok.status_code == 200, ok.text
