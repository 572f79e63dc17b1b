"""Every exception becomes its answer in one place: a server fault is never a 4xx, a client mistake never a 500."""

from __future__ import annotations

import orjson
import pytest
from starlette.exceptions import HTTPException

from shipml.errors import DataValidationError, ModelLoadError, RegistryError, ShipmlError, StoreError, StoreFull
from shipml.server.errors import ApiError, render, to_api_error


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (StoreFull("queue full"), 503, "overloaded"),
        (StoreError("disk I/O error at /var/lib/x"), 503, "store_unavailable"),
        (ModelLoadError("bad hash"), 503, "model_unavailable"),
        (RegistryError("down"), 503, "registry_unavailable"),
        (DataValidationError("tenure: expected a number", report=None), 422, "validation_error"),
        (ShipmlError("something the server got wrong"), 500, "internal"),
        (RuntimeError("boom /etc/secret"), 500, "internal"),
        (HTTPException(404), 404, "not_found"),
        (HTTPException(405, headers={"Allow": "POST"}), 405, "method_not_allowed"),
        (ApiError(413, "batch_too_large", "2001 records; the limit is 2000"), 413, "batch_too_large"),
    ],
)
def test_each_exception_class_has_one_status(exc: BaseException, status: int, code: str) -> None:
    err = to_api_error(exc)
    assert (err.status, err.code) == (status, code)


def test_server_faults_never_show_their_text_to_the_client() -> None:
    for exc in (StoreError("disk I/O error at /var/lib/x"), RuntimeError("boom /etc/secret")):
        _, payload, _ = render(exc, "/feedback")
        assert b"/var/lib" not in payload and b"/etc/secret" not in payload


def test_the_body_has_the_shape_of_the_protocol_spoken() -> None:
    err = ApiError(422, "validation_error", "1 record(s) failed validation", [{"record": 0, "feature": "tenure"}])
    status, payload, _ = render(err, "/predict")
    assert status == 422
    assert orjson.loads(payload) == {
        "error": {
            "code": "validation_error",
            "message": "1 record(s) failed validation",
            "details": [{"record": 0, "feature": "tenure"}],
        }
    }
    _, payload, _ = render(err, "/v2/models/churn/infer")
    assert orjson.loads(payload) == {"error": "1 record(s) failed validation"}
    _, payload, _ = render(StoreFull("full"), "/invocations")
    body = orjson.loads(payload)
    assert body["error_code"] == "SERVICE_UNAVAILABLE" and body["error"]["code"] == "overloaded"
    assert body["message"] == body["error"]["message"]


def test_401_carries_www_authenticate_and_405_its_allow_header() -> None:
    _, _, headers = render(ApiError(401, "unauthenticated", "a key is required"), "/predict")
    assert headers["WWW-Authenticate"] == "Bearer"
    _, _, headers = render(HTTPException(405, headers={"Allow": "POST"}), "/predict/batch")
    assert headers["Allow"] == "POST"
