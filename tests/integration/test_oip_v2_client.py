"""The Open Inference Protocol v2 through its real client (tritonclient.http) against a real `shipml serve`;
the other protocols' request limits and the OpenAPI request bodies on the same server."""

from __future__ import annotations

import importlib.metadata
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import numpy as np
import orjson
import pytest
import requests
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from shipml.examples.churn import FEATURES
from tests.support.project import TrainedProject
from tests.support.server import Keys, Server, auth, make_keys, records, start_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]
MAX_BATCH = 50
MAX_BODY = 20_000
INTEGER = ("tenure", "age", "support_calls")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, trained_project: TrainedProject) -> tuple[Path, Keys]:
    keys, auth_section = make_keys()
    serve = f"serve:\n  max_batch: {MAX_BATCH}\n  max_body_bytes: {MAX_BODY}\n"
    return trained_project.workspace(tmp_path_factory.mktemp("oip"), auth_section + serve), keys


@pytest.fixture(scope="module")
def server(project: tuple[Path, Keys]) -> Iterator[Server]:
    s = start_server(project[0])
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="module")
def keys(project: tuple[Path, Keys]) -> Keys:
    return project[1]


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[triton.InferenceServerClient]:
    c = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
    yield c
    c.close()


def predicted(server: Server, keys: Keys, rows: list[dict[str, Any]]) -> tuple[np.ndarray, list[str]]:
    """What /predict answers for each row: probabilities of classes 0 and 1, and the class."""
    probs, labels = [], []
    with requests.Session() as http:
        for row in rows:
            r = http.post(f"{server.url}/predict", json={"features": row}, headers=auth(keys.predict), timeout=10)
            assert r.status_code == 200, r.text
            probs.append([r.json()["probabilities"]["0"], r.json()["probabilities"]["1"]])
            labels.append(str(r.json()["predicted_class"]))
    return np.asarray(probs), labels


def tensors(rows: list[dict[str, Any]], binary: bool, skip: str = "") -> list[triton.InferInput]:
    """One tensor per feature: BYTES for categories, INT64 for whole numbers (binary), FP64 otherwise."""
    out = []
    for f in FEATURES:
        if f == skip:
            continue
        values = [r[f] for r in rows]
        if isinstance(rows[0][f], str):
            data, datatype = np.array(values, dtype=object), "BYTES"
        elif binary and f in INTEGER:
            data, datatype = np.array(values, dtype=np.int64), "INT64"
        else:  # a missing value travels as NaN in a binary tensor
            data, datatype = np.array([np.nan if v is None else v for v in values], dtype=np.float64), "FP64"
        t = triton.InferInput(f, [len(rows)], datatype)
        t.set_data_from_numpy(data, binary_data=binary)
        out.append(t)
    return out


def failure(call: Any, *args: Any, **kwargs: Any) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        call(*args, **kwargs)
    return caught.value


def test_server_metadata_and_health(client: triton.InferenceServerClient) -> None:
    assert client.get_server_metadata() == {
        "name": "shipml",
        "version": importlib.metadata.version("shipml"),
        "extensions": ["binary_tensor_data"],
    }
    assert client.is_server_live() and client.is_server_ready()


def test_model_readiness_is_200_or_404(client: triton.InferenceServerClient, server: Server) -> None:
    assert client.is_model_ready("churn") and client.is_model_ready("churn", "1")
    assert not client.is_model_ready("nope") and not client.is_model_ready("churn", "9")
    r = requests.get(f"{server.url}/v2/models/nope/ready", timeout=10)
    assert (r.status_code, r.json()) == (404, {"error": "this server serves 'churn', not 'nope'"})
    r = requests.get(f"{server.url}/v2/models/churn/versions/9/ready", timeout=10)
    assert (r.status_code, r.json()) == (404, {"error": "model 'churn' is served at version 1, not '9'"})


def test_model_metadata_plain_and_versioned(client: triton.InferenceServerClient, keys: Keys) -> None:
    for version in ("", "1"):
        meta = client.get_model_metadata("churn", version, headers=auth(keys.predict))
        assert [i["name"] for i in meta["inputs"]] == list(FEATURES)
        assert {i["name"]: i["datatype"] for i in meta["inputs"]}["contract"] == "BYTES"
        assert [o["name"] for o in meta["outputs"]] == ["probabilities", "predicted_class", "prediction_id"]
        assert meta["versions"] == ["1"]
    err = failure(client.get_model_metadata, "churn", "2", headers=auth(keys.predict))
    assert (err.status(), err.message()) == ("404", "model 'churn' is served at version 1, not '2'")


def test_json_infer_equals_predict(client: triton.InferenceServerClient, server: Server, keys: Keys) -> None:
    rows = [r for r in records(40, seed=9) if r["total_charges"] is not None][:16]
    expected, labels = predicted(server, keys, rows)
    outputs = [triton.InferRequestedOutput(n, binary_data=False) for n in ("probabilities", "predicted_class")]
    result = client.infer("churn", tensors(rows, binary=False), outputs=outputs, headers=auth(keys.predict))
    np.testing.assert_array_equal(result.as_numpy("probabilities"), expected)
    assert result.as_numpy("predicted_class").tolist() == labels  # JSON BYTES come back as text
    assert result.get_response()["model_version"] == "1"
    assert result.as_numpy("prediction_id") is None  # only the outputs asked for


def test_binary_infer_equals_predict_with_binary_outputs(
    client: triton.InferenceServerClient, server: Server, keys: Keys
) -> None:
    rows = records(24, seed=11)
    assert any(r["total_charges"] is None for r in rows)  # a missing value, sent as NaN
    expected, labels = predicted(server, keys, rows)
    outputs = [
        triton.InferRequestedOutput("probabilities", binary_data=True),
        triton.InferRequestedOutput("predicted_class", binary_data=True),
        triton.InferRequestedOutput("prediction_id", binary_data=False),
    ]
    result = client.infer(
        "churn", tensors(rows, binary=True), outputs=outputs, model_version="1", headers=auth(keys.predict)
    )
    np.testing.assert_array_equal(result.as_numpy("probabilities"), expected)
    assert [v.decode() for v in result.as_numpy("predicted_class")] == labels
    assert result.get_output("probabilities")["parameters"] == {"binary_data_size": 24 * 2 * 8}
    assert len(set(result.as_numpy("prediction_id").tolist())) == 24
    # no outputs named: the client asks for all of them, in binary
    every = client.infer("churn", tensors(rows, binary=True), headers=auth(keys.predict))
    np.testing.assert_array_equal(every.as_numpy("probabilities"), expected)
    assert all("binary_data_size" in o["parameters"] for o in every.get_response()["outputs"])


def test_client_errors_carry_shipmls_message(client: triton.InferenceServerClient, keys: Keys) -> None:
    rows = [r for r in records(10, seed=3) if r["total_charges"] is not None][:4]
    err = failure(client.infer, "nope", tensors(rows, binary=True), headers=auth(keys.predict))
    assert (err.status(), err.message()) == ("404", "this server serves 'churn', not 'nope'")
    err = failure(client.infer, "churn", tensors(rows, binary=True, skip="tenure"), headers=auth(keys.predict))
    assert (err.status(), err.message()) == (
        "400",
        "missing input(s) 'tenure'; every non-nullable feature is required",
    )
    wrong = [t for t in tensors(rows, binary=True) if t.name() != "contract"]
    contract = triton.InferInput("contract", [len(rows)], "FP64")
    contract.set_data_from_numpy(np.ones(len(rows)), binary_data=True)
    err = failure(client.infer, "churn", [*wrong, contract], headers=auth(keys.predict))
    assert err.status() == "422"
    assert err.message().startswith(
        "4 record(s) failed validation: record 0, 'contract' (type): expected a string, got 1.0;"
    )
    err = failure(client.infer, "churn", tensors(rows, binary=True))
    assert err.status() == "401" and err.message().startswith("a valid API key is required")


def test_v2_limits_and_malformed_bodies_are_4xx_in_the_protocols_shape(server: Server, keys: Keys) -> None:
    url = f"{server.url}/v2/models/churn/infer"
    n = MAX_BATCH + 1
    header = orjson.dumps(
        {"inputs": [{"name": "tenure", "datatype": "FP64", "shape": [n], "parameters": {"binary_data_size": 8 * n}}]}
    )
    headers = auth(keys.predict) | {"Inference-Header-Content-Length": str(len(header))}
    r = requests.post(url, data=header + struct.pack(f"<{n}d", *range(n)), headers=headers, timeout=10)
    assert (r.status_code, r.json()) == (413, {"error": f"inputs[0] 'tenure': {n} rows; the limit is {MAX_BATCH}"})
    r = requests.post(url, data=header + b"x" * MAX_BODY, headers=headers, timeout=10)
    assert r.status_code == 413 and "limit" in r.json()["error"]
    bad_length = auth(keys.predict) | {"Inference-Header-Content-Length": str(len(header) + 10_000)}
    r = requests.post(url, data=header + b"\0" * 8, headers=bad_length, timeout=10)
    assert r.status_code == 400
    assert r.json() == {
        "error": f"Inference-Header-Content-Length is {len(header) + 10_000}, but the body has "
        f"{len(header) + 8} bytes; expected 1 to {len(header) + 8}"
    }
    good = [{"name": f, "datatype": "FP64", "shape": [1], "data": [1]} for f in FEATURES]
    for body, status, message in (
        ({"inputs": good, "parameters": None}, 400, "parameters: expected an object of parameters, got null"),
        ({"inputs": good, "parameters": []}, 400, "parameters: expected an object of parameters, got an array"),
        ({"inputs": [{**good[0], "parameters": []}]}, 400, "inputs[0] 'tenure': parameters: expected an object"),
        ({"inputs": good, "outputs": [{"name": [1]}]}, 400, "outputs[0]: expected an object with a string `name`"),
        # a datatype of the wrong JSON type was a 500 (an unhashable value looked up in the set of datatypes)
        ({"inputs": [{**good[0], "datatype": {}}]}, 400, "inputs[0] 'tenure': datatype must be one of BOOL, "),
        ({"inputs": [{**good[0], "datatype": ["FP64"]}]}, 400, "inputs[0] 'tenure': datatype must be one of BOOL, "),
    ):
        r = requests.post(url, json=body, headers=auth(keys.predict), timeout=10)
        assert r.status_code == status, (body, r.text)
        assert r.json()["error"].startswith(message), r.text


def test_bad_output_names_are_refused_before_anything_is_logged(
    server: Server, keys: Keys, project: tuple[Path, Keys]
) -> None:
    import sqlite3

    db = project[0] / ".shipml" / "predictions.db"
    before = sqlite3.connect(db).execute("SELECT count(*) FROM predictions").fetchone()[0]
    row = next(r for r in records(10, seed=4) if r["total_charges"] is not None)
    inputs = [
        {"name": f, "datatype": "BYTES" if isinstance(v, str) else "FP64", "shape": [1], "data": [v]}
        for f, v in row.items()
    ]
    for outputs in ([{"name": [1]}], [{"name": "score"}]):
        r = requests.post(
            f"{server.url}/v2/models/churn/infer",
            json={"inputs": inputs, "outputs": outputs},
            headers=auth(keys.predict),
            timeout=10,
        )
        assert r.status_code == 400, r.text
    after = sqlite3.connect(db).execute("SELECT count(*) FROM predictions").fetchone()[0]
    assert after == before


def test_mlflow_column_bodies_over_max_batch_are_413(server: Server, keys: Keys) -> None:
    n = MAX_BATCH + 1
    for body in (
        {"inputs": {"tenure": [1] * n, "contract": ["one-year"] * n}},
        {"dataframe_split": {"columns": [], "data": [[]] * n}},
    ):
        r = requests.post(f"{server.url}/invocations", json=body, headers=auth(keys.predict), timeout=10)
        assert r.status_code == 413, r.text
        assert r.json()["error"] == {"code": "batch_too_large", "message": f"{n} records; the limit is {MAX_BATCH}"}
    r = requests.post(
        f"{server.url}/invocations",
        json={"dataframe_split": {"columns": [["tenure"]], "data": [[1]]}},
        headers=auth(keys.predict),
        timeout=10,
    )
    assert r.status_code == 400
    assert r.json()["message"] == "dataframe_split columns[0]: expected a column name (a string), got list"


# --- /openapi.json: the request bodies it describes are the ones the server accepts ----------------


def conforms(value: Any, schema: dict[str, Any], root: dict[str, Any]) -> bool:
    """Whether ``value`` is valid against ``schema``, whose references point into the document ``root``."""
    return bool(jsonschema_rs.validator_for({**schema, "components": root["components"]}).is_valid(value))


def test_openapi_request_bodies_accept_valid_bodies_and_reject_invalid_ones(server: Server, keys: Keys) -> None:
    spec = requests.get(f"{server.url}/openapi.json", timeout=10).json()
    rows = [r for r in records(10, seed=6) if r["total_charges"] is not None][:2]
    predicted_id = requests.post(
        f"{server.url}/predict", json={"features": rows[0]}, headers=auth(keys.predict), timeout=10
    ).json()["prediction_id"]
    tensors_json = [
        {
            "name": f,
            "datatype": "BYTES" if isinstance(rows[0][f], str) else "FP64",
            "shape": [2],
            "data": [r[f] for r in rows],
        }
        for f in FEATURES
    ]
    cases: list[tuple[str, str, list[Any], list[Any]]] = [
        (
            "/invocations",
            keys.predict,
            [
                {"dataframe_split": {"columns": list(FEATURES), "data": [[r[f] for f in FEATURES] for r in rows]}},
                {"dataframe_records": rows},
                {"instances": rows},
                {"inputs": {f: [r[f] for r in rows] for f in FEATURES}},
            ],
            [
                {"records": rows},
                {"instances": rows, "inputs": rows},
                {"dataframe_records": [rows[0] | {"tenure": "x"}]},
            ],
        ),
        (
            "/feedback",
            keys.admin,
            [{"prediction_id": predicted_id, "label": 1}, {"prediction_id": predicted_id, "label": "1"}],
            [{"prediction_id": predicted_id}, {"prediction_id": predicted_id, "label": 1, "value": 1.0}, {"label": 1}],
        ),
        (
            "/v2/models/{name}/infer",
            keys.predict,
            [{"inputs": tensors_json}, {"inputs": tensors_json, "outputs": [{"name": "probabilities"}], "id": "a"}],
            [
                {"inputs": []},
                {"inputs": [{"name": "tenure", "data": [1]}]},
                {"inputs": tensors_json, "outputs": [{"name": "x"}]},
            ],
        ),
    ]
    for path, key, valid, invalid in cases:
        body = spec["paths"][path]["post"]["requestBody"]
        schema = body["content"]["application/json"]["schema"]
        url = f"{server.url}{path.replace('{name}', 'churn')}"
        for value in valid:
            assert conforms(value, schema, spec), (path, value)
            r = requests.post(url, json=value, headers=auth(key), timeout=10)
            assert r.status_code == 200, (path, value, r.text)
        for value in invalid:
            assert not conforms(value, schema, spec), (path, value)
            r = requests.post(url, json=value, headers=auth(key), timeout=10)
            assert 400 <= r.status_code < 500, (path, value, r.text)
