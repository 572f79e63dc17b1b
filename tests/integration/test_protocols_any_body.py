"""Any body through the whole service (in-process: body reader, auth, decoder, routing, record validation, model,
prediction log): every protocol answers 2xx or 4xx, never 5xx, and a 4xx in its protocol's error shape.

The unit tests feed the decoders alone (tests/unit/server/test_decoders_property.py); here the same bodies,
drawn for the example model, also reach what comes after a decoder.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from shipml.config import load_settings
from shipml.core.schema import FeatureSchema
from shipml.server.protocols import mlflow
from shipml.server.protocols.oip_v2 import HEADER_LENGTH, ModelSignature
from tests.support import bodies
from tests.support.asgi import InProcessService, serve_in_process
from tests.support.project import TrainedProject
from tests.support.server import Keys, auth, make_keys, records

pytestmark = pytest.mark.integration
LIMIT = 3  # serve.max_batch here: bodies past it (413) are drawn too
THROUGH_APP = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)


@dataclass(frozen=True)
class Served:
    app: InProcessService
    keys: Keys
    ids: list[str]  # of predictions made: feedback for them reaches the store
    schema: FeatureSchema
    signature: ModelSignature
    shown: dict[str, Any]  # /openapi.json's example request of each path: always sent, answered 200


@pytest.fixture(scope="module")
def service(trained_project: TrainedProject, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    keys, auth_yaml = make_keys()
    root: Path = trained_project.workspace(
        tmp_path_factory.mktemp("any-body"), auth_yaml + f"serve:\n  max_batch: {LIMIT}\n  reload_interval_s: 0\n"
    )
    settings_ = load_settings(root / "shipml.yaml", overrides={"home": str(root / ".shipml")})
    with serve_in_process(settings_) as app:
        ids = [
            app.post("/predict", json={"features": r}, headers=auth(keys.predict)).json()["prediction_id"]
            for r in records(4, seed=3)
        ]
        model = app.get("/model", headers=auth(keys.predict)).json()
        schema = FeatureSchema.from_dict(model["schema"])
        signature = ModelSignature.of("churn", model["version"], schema, model["classes"])
        shown = {
            path: operations["post"]["requestBody"]["content"]["application/json"]["example"]
            for path, operations in app.get("/openapi.json").json()["paths"].items()
            if "example"
            in operations.get("post", {}).get("requestBody", {}).get("content", {}).get("application/json", {})
        }
        shown["/feedback"] = {"prediction_id": ids[0], "label": "1"}
        yield Served(app, keys, ids, schema, signature, shown)


def answered(response: httpx.Response, protocol: str, seen: set[int]) -> Any:
    """The JSON answer, after checking it is not a 5xx and that a 4xx has its protocol's error shape; its status
    is added to ``seen``."""
    seen.add(response.status_code)
    assert response.status_code < 500, (response.status_code, response.text[:2000])
    if response.headers.get("content-type", "").startswith("application/octet-stream"):
        return None  # v2 binary outputs: the JSON header, then bytes
    body = response.json()
    if response.status_code >= 400:
        if protocol == "v2":
            assert isinstance(body["error"], str) and body["error"], body
        else:
            assert isinstance(body["error"]["code"], str) and body["error"]["message"], body
            if protocol == "mlflow":
                assert body["error_code"] == "BAD_REQUEST" and body["message"] == body["error"]["message"], body
    return body


def post(app: InProcessService, key: str, path: str, body: Any, **headers: str) -> httpx.Response:
    # the standard library writes what orjson refuses: NaN, infinities, integers past 64 bits
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return app.post(path, content=raw, headers=auth(key) | {"Content-Type": "application/json", **headers})


def _same(body: Any, shown: Any) -> bool:
    """The body is the documented example, as JSON: ``False == 0`` in Python, but a JSON ``false`` is not a number."""
    return json.dumps(body, sort_keys=True, default=repr) == json.dumps(shown, sort_keys=True, default=repr)


def test_any_body_to_predict_is_answered_2xx_or_4xx(service: Served) -> None:
    app, keys, schema, signature = service.app, service.keys, service.schema, service.signature
    seen: set[int] = set()  # statuses answered

    @THROUGH_APP
    @given(bodies.predict_bodies(schema) | st.binary(max_size=64))
    @example(service.shown["/predict"])
    @example({})
    def check(body: Any) -> None:
        answer = answered(post(app, keys.predict, "/predict", body), "shipml", seen)
        assert not _same(body, service.shown["/predict"]) or "prediction_id" in answer, answer
        if isinstance(answer, dict) and "prediction_id" in answer:
            assert answer["model"]["name"] == "churn" and set(answer["probabilities"]) == set(signature.classes)

    check()
    assert 200 in seen and any(400 <= s < 500 for s in seen), seen  # the example answered, {} refused


def test_any_body_to_predict_batch_is_answered_2xx_or_4xx_with_an_answer_per_record(service: Served) -> None:
    app, keys, schema = service.app, service.keys, service.schema
    seen: set[int] = set()  # statuses answered

    @THROUGH_APP
    @given(bodies.batch_bodies(schema, LIMIT))
    @example(service.shown["/predict/batch"])
    @example({})
    def check(body: Any) -> None:
        response = post(app, keys.predict, "/predict/batch", body)
        answer = answered(response, "shipml", seen)
        assert not _same(body, service.shown["/predict/batch"]) or answer["failed"] == 0, answer
        if response.status_code == 200:
            sent = body["records"] if isinstance(body, dict) else body
            assert [p["index"] for p in answer["predictions"]] == list(range(len(sent)))
            assert answer["failed"] == sum(1 for p in answer["predictions"] if "error" in p)

    check()
    assert 200 in seen and any(400 <= s < 500 for s in seen), seen  # the example answered, {} refused


def test_any_body_to_feedback_is_answered_2xx_or_4xx(service: Served) -> None:
    app, keys, ids = service.app, service.keys, service.ids
    seen: set[int] = set()  # statuses answered

    @THROUGH_APP
    @given(bodies.feedback_bodies(st.sampled_from(ids)))
    @example(service.shown["/feedback"])
    @example({})
    def check(body: Any) -> None:
        response = post(app, keys.admin, "/feedback", body)
        answered(response, "shipml", seen)
        assert not _same(body, service.shown["/feedback"]) or response.status_code == 200, response.text
        if response.status_code == 200:
            assert body["prediction_id"] in ids

    check()
    assert 200 in seen and any(400 <= s < 500 for s in seen), seen  # the example answered, {} refused


def test_any_body_to_invocations_is_answered_2xx_or_4xx(service: Served) -> None:
    app, keys, schema = service.app, service.keys, service.schema
    seen: set[int] = set()  # statuses answered

    @THROUGH_APP
    @given(bodies.invocations_bodies(schema, LIMIT, mlflow.FORMATS))
    @example(service.shown["/invocations"])
    @example({})
    def check(body: Any) -> None:
        answer = answered(post(app, keys.predict, "/invocations", body), "mlflow", seen)
        assert not _same(body, service.shown["/invocations"]) or "predictions" in answer, answer
        if isinstance(answer, dict) and "predictions" in answer:
            assert len(answer["predictions"]) <= LIMIT

    check()
    assert 200 in seen and any(400 <= s < 500 for s in seen), seen  # the example answered, {} refused


def test_any_json_or_binary_body_to_v2_infer_is_answered_2xx_or_4xx(service: Served) -> None:
    app, keys, signature = service.app, service.keys, service.signature
    seen: set[int] = set()  # statuses answered

    @THROUGH_APP
    @given(bodies.infer_bodies(signature, LIMIT) | bodies.binary_infer_bodies(signature, LIMIT))
    @example(service.shown["/v2/models/{name}/infer"])
    @example({})
    def check(body: Any) -> None:
        if isinstance(body, tuple):  # the binary extension: any bytes, any header length
            raw, length = body
            # a header value is printable ASCII on the wire (other lengths: the unit tests)
            sendable = length is not None and length.isascii() and length.isprintable()
            headers = {HEADER_LENGTH: length} if sendable else {}
            response = post(app, keys.predict, "/v2/models/churn/infer", raw, **headers)
        else:
            response = post(app, keys.predict, "/v2/models/churn/versions/1/infer", body)
        answer = answered(response, "v2", seen)
        assert not _same(body, service.shown["/v2/models/{name}/infer"]) or response.status_code == 200, response.text
        if response.status_code == 200 and answer is not None:
            assert answer["model_name"] == "churn" and answer["outputs"]

    check()
    assert 200 in seen and any(400 <= s < 500 for s in seen), seen  # the example answered, {} refused
