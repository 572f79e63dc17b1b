"""Every protocol decoder, fed any JSON value (and the v2 binary extension any bytes and header length), returns
a well-formed request or raises an ``ApiError`` with a 4xx: never another exception, which would be a 500.

The bodies (tests/support/bodies.py) are drawn valid and then mutated, so that the draws get past a decoder's
first check and into the fields behind it, and as any JSON value at all.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from shipml.core.schema import FeatureSchema
from shipml.server.errors import ApiError
from shipml.server.http import parse_json
from shipml.server.protocols import mlflow, oip_v2
from shipml.server.protocols import shipml as shipml_protocol
from tests.support import bodies

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
NAMES = list(SCHEMA.names)
OUTPUTS = [t.name for t in SIGNATURE.outputs]
LIMIT = 3  # small, so that bodies over the row limit (413) are drawn too
PROPERTY = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def decoded_or_4xx(call: Callable[[], Any]) -> Any:
    """The decoder's result, or None after an ApiError with a 4xx; any other exception fails the test."""
    try:
        return call()
    except ApiError as err:
        assert 400 <= err.status < 500, (err.status, err.message)
        assert err.message
        return None


# --- parse_json -------------------------------------------------------------------------------------------


def json_text() -> st.SearchStrategy[str]:
    """Text that is JSON, nearly JSON, or JSON with the numbers orjson refuses (NaN, Infinity, 1e999, long ints)."""
    atoms = st.sampled_from(
        ["null", "true", "1", "-0.5", "NaN", "Infinity", "-Infinity", "1e999", "9" * 30, "9" * 5000, '"\\ud800"', '"a"']
    )
    return st.recursive(
        atoms | st.text(max_size=3),
        lambda inner: (
            st.lists(inner, max_size=4).map(lambda xs: "[" + ",".join(xs) + "]")
            | st.lists(st.tuples(st.text(max_size=4), inner), max_size=3).map(
                lambda kv: "{" + ",".join(f"{orjson.dumps(k).decode()}:{v}" for k, v in kv) + "}"
            )
            | inner.map(lambda x: x + ",")
        ),
        max_leaves=12,
    )


@PROPERTY
@given(st.binary(max_size=64) | json_text().map(str.encode) | st.integers(1, 200_000).map(lambda n: b"[" * n))
@example(b"")
@example(b'{"a":')
@example(b"[" * 100_000)
@example(b'"\\ud800"')
@example('{"a": NaN}'.encode("utf-16"))
def test_parse_json_returns_a_value_or_a_4xx(body: bytes) -> None:
    value = decoded_or_4xx(lambda: parse_json(body))
    if value is not None:
        orjson.dumps(value)  # what it returns can be written back (no lone surrogate, no unknown type)
        body.decode("utf-8")  # and it was UTF-8, as JSON between systems must be (RFC 8259)


@PROPERTY
@given(bodies.JSON)
def test_parse_json_reads_back_any_json_value(value: Any) -> None:
    text = orjson.dumps(value)  # NaN and infinities are written as null
    assert orjson.dumps(parse_json(text)) == text


# --- shipml's own API: /predict, /predict/batch, /feedback ------------------------------------------------


@PROPERTY
@given(bodies.predict_bodies(SCHEMA))
def test_predict_body_decodes_to_features_or_a_4xx(body: Any) -> None:
    features = decoded_or_4xx(lambda: shipml_protocol.one_record(body))
    if features is not None:
        assert isinstance(features, dict)
        assert features is body["features"]


@PROPERTY
@given(bodies.batch_bodies(SCHEMA, LIMIT))
def test_batch_body_decodes_to_records_and_keys_or_a_4xx(body: Any) -> None:
    records = decoded_or_4xx(lambda: shipml_protocol.batch_records(body, LIMIT))
    if records is not None:
        assert len(records) <= LIMIT
        assert all(r.key is None or (isinstance(r.key, str) and 0 < len(r.key) <= 256) for r in records)


@PROPERTY
@given(bodies.JSON)
def test_a_routing_key_is_text_of_1_to_256_characters_or_none(value: Any) -> None:
    key = shipml_protocol.routing_key(value)
    assert key is None or (isinstance(key, str) and 0 < len(key) <= 256)


@PROPERTY
@given(bodies.feedback_bodies())
def test_feedback_body_decodes_or_is_a_4xx(body: Any) -> None:
    fb = decoded_or_4xx(lambda: shipml_protocol.feedback_request(body))
    if fb is not None:
        assert isinstance(fb.prediction_id, str) and 0 < len(fb.prediction_id) <= 64
        assert (fb.label is None) != (fb.value is None)
        assert fb.value is None or (isinstance(fb.value, float) and math.isfinite(fb.value))
        assert fb.label is None or len(fb.label) <= shipml_protocol.MAX_LABEL_CHARS


# --- MLflow's /invocations: dataframe_split, dataframe_records, instances, inputs ---------------------------


@PROPERTY
@given(bodies.invocations_bodies(SCHEMA, LIMIT, mlflow.FORMATS))
def test_invocations_body_decodes_to_records_or_a_4xx(body: Any) -> None:
    records = decoded_or_4xx(lambda: mlflow.decode_invocations(body, LIMIT))
    if records is not None:
        assert isinstance(records, list) and len(records) <= LIMIT


# --- Open Inference Protocol v2: /v2/models/{name}/infer -------------------------------------------------


def check_infer_request(request: oip_v2.InferRequest) -> None:
    """What the service relies on in a decoded request: columns of ``rows`` values each, within the limit,
    of known inputs, every required one present, and outputs the model has."""
    assert 0 <= request.rows <= LIMIT
    assert set(request.columns) <= SIGNATURE.input_names
    assert SIGNATURE.required <= set(request.columns)
    assert all(len(values) == request.rows for values in request.columns.values())
    assert {o.name for o in request.outputs} <= set(OUTPUTS)
    assert request.id is None or isinstance(request.id, str)
    assert len(request.records()) == request.rows


@PROPERTY
@given(bodies.infer_bodies(SIGNATURE, LIMIT))
@example({"inputs": [{"name": "tenure", "datatype": {}, "shape": [0], "data": []}]})
@example({"inputs": [{"name": "tenure", "datatype": ["FP64"], "shape": [1], "data": [1]}]})
def test_infer_body_decodes_or_is_a_4xx(body: Any) -> None:
    request = decoded_or_4xx(lambda: oip_v2.decode_infer(body, memoryview(b""), SIGNATURE, LIMIT))
    if request is not None:
        check_infer_request(request)


@PROPERTY
@given(bodies.binary_infer_bodies(SIGNATURE, LIMIT))
@example((b'{"inputs": []}', "\xb2"))
def test_binary_infer_body_with_any_bytes_and_header_length_decodes_or_is_a_4xx(body: tuple[bytes, str | None]) -> None:
    raw, length = body

    def decode() -> oip_v2.InferRequest:
        json_part, binary_part = oip_v2.split_body(raw, length)
        return oip_v2.decode_infer(parse_json(json_part), binary_part, SIGNATURE, LIMIT)

    request = decoded_or_4xx(decode)
    if request is not None:
        check_infer_request(request)


@PROPERTY
@given(
    st.sampled_from(["FP64", "FP32", "FP16", "INT64", "INT8", "UINT64", "BOOL", "BYTES"]),
    st.integers(0, LIMIT + 1),
    st.binary(max_size=40),
    st.sampled_from(NAMES),
)
def test_a_binary_tensor_of_any_bytes_decodes_or_is_a_4xx(datatype: str, rows: int, blob: bytes, name: str) -> None:
    tensor = {"name": name, "datatype": datatype, "shape": [rows], "parameters": {"binary_data_size": len(blob)}}
    others = [{"name": n, "datatype": "FP64", "shape": [rows], "data": [1.0] * rows} for n in NAMES if n != name]
    body = {"inputs": [tensor, *others]}
    request = decoded_or_4xx(lambda: oip_v2.decode_infer(body, memoryview(blob), SIGNATURE, LIMIT))
    if request is not None:
        check_infer_request(request)
        if datatype.startswith("FP"):  # NaN is the binary tensor's missing value: never passed on as NaN
            assert not any(isinstance(v, float) and math.isnan(v) for v in request.columns[name])


# --- what the properties found, named -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("datatype", "shown"), [({}, "an object"), ([], "an array"), (["FP64"], "an array"), (None, "null"), (7, "int")]
)
def test_v2_a_datatype_of_the_wrong_json_type_is_400_naming_the_tensor(datatype: Any, shown: str) -> None:
    body = {"inputs": [{"name": "tenure", "datatype": datatype, "shape": [1], "data": [1]}]}
    with pytest.raises(ApiError) as caught:
        oip_v2.decode_infer(body, memoryview(b""), SIGNATURE, LIMIT)
    assert caught.value.status == 400
    assert (
        caught.value.message
        == f"inputs[0] 'tenure': datatype must be one of {', '.join(oip_v2.DATATYPES)}, got {shown}"
    )


@pytest.mark.parametrize("length", ["\xb2", "\u0663", "\u0661\u0662"])
def test_v2_a_header_length_of_non_ascii_digits_is_400(length: str) -> None:
    with pytest.raises(ApiError) as caught:
        oip_v2.split_body(b'{"inputs": []}', length)
    assert caught.value.status == 400
    assert caught.value.message.startswith("Inference-Header-Content-Length must be a byte count")


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le"])
@pytest.mark.parametrize("text", ['{"a": 1}', '{"a": NaN}'])
def test_a_body_in_utf16_or_utf32_is_400_not_read(text: str, encoding: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_json(text.encode(encoding))
    assert (caught.value.status, caught.value.code) == (400, "invalid_json")


@pytest.mark.parametrize("text", ['{"a": 1}', '{"a": NaN}', '{"a": "\u00e9t\u00e9"}'])
def test_a_utf8_byte_order_mark_is_ignored(text: str) -> None:
    read = parse_json(b"\xef\xbb\xbf" + text.encode())
    assert orjson.dumps(read) == orjson.dumps(parse_json(text.encode()))
