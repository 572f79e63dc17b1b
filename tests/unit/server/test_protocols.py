"""The wire protocols' pure decoders and encoders (server/protocols/), without a server."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson
import pytest
import tritonclient.http as triton
from tritonclient.http import InferResult
from tritonclient.http._utils import _get_inference_request

from shipml.core.prediction import Prediction, Served, Status
from shipml.core.records import FieldError
from shipml.core.schema import FeatureSchema
from shipml.server.errors import ApiError
from shipml.server.protocols import mlflow, oip_v2

SCHEMA = FeatureSchema.from_dict(
    {
        "target": {"name": "churn", "task": "binary", "classes": ["no", "yes"]},
        "features": [
            {"name": "tenure", "kind": "integer", "min": 0, "max": 72},
            {"name": "charges", "kind": "numeric", "nullable": True},
            {"name": "contract", "kind": "categorical", "categories": ["monthly", "yearly"]},
            {"name": "senior", "kind": "boolean"},
        ],
    }
)
SIGNATURE = oip_v2.ModelSignature.of("churn", "3", SCHEMA, ["no", "yes"])


class Untouchable(list[Any]):
    """A column whose values must not be read: only its length may be (the row count check)."""

    def __iter__(self) -> Any:
        raise AssertionError("the decoder read values before checking the row count")

    def __getitem__(self, index: Any) -> Any:
        raise AssertionError("the decoder read values before checking the row count")


def refused(call: Any, *args: Any) -> ApiError:
    with pytest.raises(ApiError) as caught:
        call(*args)
    return caught.value


# --- MLflow ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"inputs": {"tenure": Untouchable([1] * 11), "contract": Untouchable(["monthly"] * 11)}},
        {"instances": {"tenure": Untouchable([1] * 11)}},
        {"dataframe_split": {"columns": [], "data": Untouchable([[]] * 11)}},
        {"dataframe_split": {"columns": ["tenure"], "data": Untouchable([[1]] * 11)}},
        {"dataframe_records": Untouchable([{}] * 11)},
    ],
)
def test_mlflow_bodies_over_max_batch_are_413_before_any_record_is_built(body: dict[str, Any]) -> None:
    err = refused(mlflow.decode_invocations, body, 10)
    assert (err.status, err.code, err.message) == (413, "batch_too_large", "11 records; the limit is 10")


def test_mlflow_formats_decode_to_the_same_records() -> None:
    rows = [{"tenure": 1, "contract": "monthly"}, {"tenure": 2, "contract": "yearly"}]
    for body in (
        {"dataframe_split": {"columns": ["tenure", "contract"], "data": [[1, "monthly"], [2, "yearly"]]}},
        {"dataframe_records": rows},
        {"instances": rows},
        {"inputs": {"tenure": [1, 2], "contract": ["monthly", "yearly"]}},
    ):
        assert mlflow.decode_invocations(body, 10) == rows


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"dataframe_split": {"columns": [["tenure"]], "data": [[1]]}},
            "dataframe_split columns[0]: expected a column name (a string), got list",
        ),
        (
            {"dataframe_split": {"columns": [{"a": 1}], "data": [[1]]}},
            "dataframe_split columns[0]: expected a column name (a string), got dict",
        ),
        ({"inputs": {"tenure": [1, 2], "contract": ["m"]}}, "equal-length lists, got lengths [1, 2]"),
        ({"inputs": {"tenure": 1}}, "inputs: a column-oriented object needs one list of values per column"),
        ({"inputs": [], "instances": []}, "expected exactly one of the keys"),
    ],
)
def test_mlflow_malformed_bodies_are_400_with_the_reason(body: dict[str, Any], message: str) -> None:
    err = refused(mlflow.decode_invocations, body, 10)
    assert err.status == 400 and message in err.message


# --- Open Inference Protocol v2 -------------------------------------------------------------------


def tensor(name: str, datatype: str, data: list[Any], **extra: Any) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": [len(data)], "data": data, **extra}


GOOD = [
    tensor("tenure", "FP64", [1.0, 2.0]),
    tensor("charges", "FP64", [10.5, 20.0]),
    tensor("contract", "BYTES", ["monthly", "yearly"]),
    tensor("senior", "BOOL", [True, 0]),
]


def decode(body: Any, blobs: bytes = b"", limit: int = 100) -> oip_v2.InferRequest:
    return oip_v2.decode_infer(body, memoryview(blobs), SIGNATURE, limit)


def test_v2_json_tensors_become_records_and_all_outputs_by_default() -> None:
    request = decode({"inputs": GOOD, "id": "r1"})
    assert request.records() == [
        {"tenure": 1.0, "charges": 10.5, "contract": "monthly", "senior": True},
        {"tenure": 2.0, "charges": 20.0, "contract": "yearly", "senior": False},
    ]
    assert [(o.name, o.binary) for o in request.outputs] == [
        ("probabilities", False),
        ("predicted_class", False),
        ("prediction_id", False),
    ]
    assert request.id == "r1"


def test_v2_a_tensor_over_max_batch_is_413_before_its_values_are_read() -> None:
    big = {"name": "tenure", "datatype": "FP64", "shape": [11], "data": Untouchable([1.0] * 11)}
    err = refused(decode, {"inputs": [big]}, b"", 10)
    assert (err.status, err.code) == (413, "batch_too_large")
    assert err.message == "inputs[0] 'tenure': 11 rows; the limit is 10"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"inputs": GOOD, "parameters": None}, "parameters: expected an object of parameters, got null"),
        ({"inputs": GOOD, "parameters": []}, "parameters: expected an object of parameters, got an array"),
        (
            {"inputs": [{**GOOD[0], "parameters": None}, *GOOD[1:]]},
            "inputs[0] 'tenure': parameters: expected an object of parameters, got null",
        ),
        (
            {"inputs": [{**GOOD[0], "parameters": []}, *GOOD[1:]]},
            "inputs[0] 'tenure': parameters: expected an object of parameters, got an array",
        ),
        ({"inputs": GOOD, "outputs": [{"name": [1]}]}, "outputs[0]: expected an object with a string `name`"),
        (
            {"inputs": GOOD, "outputs": [{"name": "score"}]},
            "outputs[0]: the model has no output 'score'; its outputs are probabilities, predicted_class, prediction_id",
        ),
        (
            {"inputs": GOOD, "outputs": [{"name": "probabilities", "parameters": None}]},
            "outputs[0].parameters: expected an object of parameters, got null",
        ),
        (
            {"inputs": GOOD, "outputs": [{"name": "probabilities", "parameters": {"binary_data": "yes"}}]},
            "outputs[0].parameters.binary_data: expected true or false, got a string",
        ),
        ({"inputs": GOOD[1:]}, "missing input(s) 'tenure'; every non-nullable feature is required"),
        (
            {"inputs": [*GOOD, tensor("plan", "BYTES", ["a", "b"])]},
            "inputs[4] 'plan': the model has no such input; its inputs are tenure, charges, contract, senior",
        ),
        ({"inputs": [*GOOD, GOOD[0]]}, "inputs[4] 'tenure': given twice"),
        (
            {"inputs": [{**GOOD[0], "shape": [2, 3]}]},
            "inputs[0] 'tenure': shape must be [rows] or [rows, 1], got [2, 3]",
        ),
        ({"inputs": [{**GOOD[0], "datatype": "FP8"}]}, "inputs[0] 'tenure': datatype must be one of BOOL,"),
        ({"inputs": [GOOD[0], tensor("charges", "FP64", [1.0])]}, "inputs[1] 'charges': 1 rows, other inputs have 2"),
        ({"inputs": [{**GOOD[0], "data": [1.0]}]}, "inputs[0] 'tenure': 1 values for shape of 2 rows"),
    ],
)
def test_v2_malformed_requests_are_400_with_the_reason(body: dict[str, Any], message: str) -> None:
    err = refused(decode, body)
    assert err.status == 400, err.message
    assert err.message.startswith(message), err.message


def binary_request(inputs: list[triton.InferInput]) -> tuple[Any, bytes]:
    """The body the real client sends (its own request builder), split as the route splits it."""
    raw, size = _get_inference_request(inputs, "", None, 0, False, False, 0, None, None)
    assert size is not None  # binary inputs: a JSON header, then the tensors
    header, blobs = oip_v2.split_body(raw, str(size))
    return orjson.loads(header), bytes(blobs)


def client_input(name: str, datatype: str, values: np.ndarray) -> triton.InferInput:
    t = triton.InferInput(name, list(values.shape), datatype)
    t.set_data_from_numpy(values, binary_data=True)
    return t


def test_v2_binary_tensors_from_the_real_client_decode_like_json() -> None:
    inputs = [
        client_input("tenure", "INT64", np.array([1, 2], dtype=np.int64)),
        client_input("charges", "FP32", np.array([10.5, np.nan], dtype=np.float32)),
        client_input("contract", "BYTES", np.array(["monthly", "yearly"], dtype=object)),
        client_input("senior", "BOOL", np.array([True, False])),
    ]
    header, blobs = binary_request(inputs)
    request = decode(header, blobs)
    assert request.records() == [
        {"tenure": 1, "charges": 10.5, "contract": "monthly", "senior": True},
        {"tenure": 2, "charges": None, "contract": "yearly", "senior": False},  # NaN: a missing value
    ]
    assert all(o.binary for o in request.outputs)  # the client asks for binary outputs when it names none


def test_v2_fp64_and_int32_binary_tensors() -> None:
    inputs = [
        client_input("tenure", "INT32", np.array([5], dtype=np.int32)),
        client_input("charges", "FP64", np.array([0.1], dtype=np.float64)),
        client_input("contract", "BYTES", np.array([b"yearly"], dtype=object)),
        client_input("senior", "BOOL", np.array([False])),
    ]
    header, blobs = binary_request(inputs)
    assert decode(header, blobs).records() == [{"tenure": 5, "charges": 0.1, "contract": "yearly", "senior": False}]


@pytest.mark.parametrize(
    ("length", "message"),
    [
        ("abc", "Inference-Header-Content-Length must be a byte count, got 'abc'"),
        ("0", "Inference-Header-Content-Length is 0, but the body has 10 bytes"),
        ("11", "Inference-Header-Content-Length is 11, but the body has 10 bytes"),
    ],
)
def test_v2_a_bad_header_length_is_400(length: str, message: str) -> None:
    err = refused(oip_v2.split_body, b"0123456789", length)
    assert err.status == 400 and err.message.startswith(message)


def fp64(name: str, values: list[float], size: int | None = None) -> dict[str, Any]:
    blob_size = 8 * len(values) if size is None else size
    return {"name": name, "datatype": "FP64", "shape": [len(values)], "parameters": {"binary_data_size": blob_size}}


@pytest.mark.parametrize(
    ("inputs", "blobs", "message"),
    [
        (
            [fp64("tenure", [1.0, 2.0], size=12)],
            struct.pack("<2d", 1, 2),
            "inputs[0] 'tenure': binary_data_size is 12 bytes; 2 FP64 values take 16",
        ),
        (
            [fp64("tenure", [1.0, 2.0], size=24)],
            struct.pack("<2d", 1, 2),
            "inputs[0] 'tenure': binary_data_size 24 runs past the end of the binary data (16 bytes",
        ),
        (
            [fp64("tenure", [1.0, 2.0])],
            struct.pack("<3d", 1, 2, 3),
            "the body has 24 bytes of binary data, but the inputs' binary_data_size add up to 16",
        ),
        (
            [{"name": "contract", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": 11}}],
            struct.pack("<I", 7) + b"monthly",
            "inputs[0] 'contract': BYTES data ends after 1 of 2 elements",
        ),
        (
            [{"name": "contract", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 8}}],
            struct.pack("<I", 99) + b"abcd",
            "inputs[0] 'contract': BYTES element 0 is 99 bytes, past the end of its data",
        ),
        (
            [{"name": "senior", "datatype": "BOOL", "shape": [1], "parameters": {"binary_data_size": 1}}],
            b"\x07",
            "inputs[0] 'senior': a binary BOOL element must be the byte 0 or 1",
        ),
        (
            [{"name": "tenure", "datatype": "FP64", "shape": [1], "parameters": {"binary_data_size": -8}}],
            b"",
            "inputs[0] 'tenure': binary_data_size must be a byte count, got '-8'",
        ),
    ],
)
def test_v2_malformed_binary_data_is_400_with_the_reason(
    inputs: list[dict[str, Any]], blobs: bytes, message: str
) -> None:
    err = refused(decode, {"inputs": inputs}, blobs)
    assert err.status == 400 and err.message.startswith(message), err.message


def test_v2_a_binary_tensor_over_max_batch_is_413() -> None:
    err = refused(decode, {"inputs": [fp64("tenure", [1.0] * 11)]}, struct.pack("<11d", *range(11)), 10)
    assert (err.status, err.message) == (413, "inputs[0] 'tenure': 11 rows; the limit is 10")


SERVED = Served("churn", "3", classes=("no", "yes"))


def results() -> list[Prediction]:
    return [
        Prediction("id-0", 0.0, SERVED, 0, {}, None, 1.0, label="yes", proba=[0.25, 0.75]),
        Prediction("id-1", 0.0, SERVED, 1, {}, None, 1.0, label="no", proba=[0.5, 0.5]),
    ]


def test_v2_binary_outputs_are_read_back_by_the_real_client() -> None:
    request = decode(
        {
            "inputs": GOOD,
            "outputs": [
                {"name": "probabilities", "parameters": {"binary_data": True}},
                {"name": "predicted_class", "parameters": {"binary_data": True}},
                {"name": "prediction_id"},
            ],
        }
    )
    encoded = oip_v2.encode_infer(SIGNATURE, request, results())
    assert encoded.header_length is not None
    parsed = InferResult.from_response_body(encoded.body, header_length=encoded.header_length)
    np.testing.assert_array_equal(parsed.as_numpy("probabilities"), [[0.25, 0.75], [0.5, 0.5]])
    assert parsed.as_numpy("predicted_class").tolist() == [b"yes", b"no"]
    assert parsed.as_numpy("prediction_id").tolist() == ["id-0", "id-1"]  # JSON data: strings
    assert parsed.get_output("probabilities")["parameters"] == {"binary_data_size": 32}
    assert parsed.get_response()["model_version"] == "3"


def test_v2_json_outputs_keep_only_what_was_asked_for() -> None:
    request = decode({"inputs": GOOD, "outputs": [{"name": "predicted_class"}], "id": "x"})
    encoded = oip_v2.encode_infer(SIGNATURE, request, results())
    assert encoded.header_length is None
    assert orjson.loads(encoded.body) == {
        "model_name": "churn",
        "model_version": "3",
        "id": "x",
        "outputs": [{"name": "predicted_class", "datatype": "BYTES", "shape": [2], "data": ["yes", "no"]}],
    }


def test_v2_refused_records_are_named_in_the_one_error_string() -> None:
    error = FieldError(1, "contract", "type", "expected a string, got 1.0")
    refusal = Prediction("id-2", 0.0, SERVED, 1, {}, None, 0.0, Status.INVALID, errors=(error,))
    err = oip_v2.invalid_records_error([results()[0], refusal])
    assert err is not None and err.status == 422
    assert err.message == "1 record(s) failed validation: record 1, 'contract' (type): expected a string, got 1.0"
    assert oip_v2.invalid_records_error(results()) is None


def test_v2_server_and_model_metadata() -> None:
    assert oip_v2.server_metadata("1.2") == {"name": "shipml", "version": "1.2", "extensions": ["binary_tensor_data"]}
    meta = SIGNATURE.metadata()
    assert [(i["name"], i["datatype"]) for i in meta["inputs"]] == [
        ("tenure", "FP64"),
        ("charges", "FP64"),
        ("contract", "BYTES"),
        ("senior", "BOOL"),
    ]
    assert [o["name"] for o in meta["outputs"]] == ["probabilities", "predicted_class", "prediction_id"]
    assert meta["outputs"][0]["shape"] == [-1, 2] and meta["versions"] == ["3"]


def test_v2_model_readiness_while_the_model_loads_is_503() -> None:
    import asyncio
    from types import SimpleNamespace

    from starlette.requests import Request

    from shipml.server.routes import v2

    manager = SimpleNamespace(current=None, ref=SimpleNamespace(name="churn"))
    app = SimpleNamespace(state=SimpleNamespace(shipml=SimpleNamespace(manager=manager)))
    request = Request({"type": "http", "app": app, "method": "GET", "path": "/v2/models/churn/ready", "headers": []})
    with pytest.raises(ApiError) as caught:
        asyncio.run(v2.model_ready(request, "churn"))
    assert (caught.value.status, caught.value.message) == (503, "model 'churn' is loading")
