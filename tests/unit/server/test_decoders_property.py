"""Every protocol decoder, fed any JSON value (and the v2 binary extension any bytes and header length), returns
a well-formed request or raises an ``ApiError`` with a 4xx: never another exception, which would be a 500.

Each body is drawn as a valid one and then mutated (a value anywhere in it replaced by any JSON value, or a key
or element dropped), so that the draws get past a decoder's first check and into the fields behind it; any
JSON value at all is drawn too.
"""

from __future__ import annotations

import math
import struct
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

# What parse_json can hand a decoder: orjson's values, plus NaN, +-inf and out-of-range numbers as floats
# (the standard library's second reading), never a lone surrogate.
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=12)
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in ``value`` (the root too), as a path of keys and indexes."""
    found = [path]
    if isinstance(value, dict):
        for k, v in value.items():
            found += _paths(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found += _paths(v, (*path, i))
    return found


def _replaced(value: Any, path: tuple[Any, ...], new: Any, drop: bool) -> Any:
    """A copy of ``value`` with the place at ``path`` set to ``new`` (or removed, when ``drop``)."""
    if not path:
        return new
    head, rest = path[0], path[1:]
    copy: Any = dict(value) if isinstance(value, dict) else list(value)
    if drop and not rest:
        del copy[head]
    else:
        copy[head] = _replaced(value[head], rest, new, drop)
    return copy


@st.composite
def mutated(draw: st.DrawFn, valid: st.SearchStrategy[Any]) -> Any:
    """A valid value with up to three places replaced by any JSON value or dropped (or none, or any JSON)."""
    value = draw(valid)
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from(_paths(value)))
        drop = bool(path) and draw(st.booleans())
        value = _replaced(value, path, None if drop else draw(JSON), drop)
    return value


def near(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a mutated valid value, sometimes any JSON value."""
    return st.one_of(mutated(valid), mutated(valid), mutated(valid), JSON)


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
def test_parse_json_returns_a_value_or_a_4xx(body: bytes) -> None:
    value = decoded_or_4xx(lambda: parse_json(body))
    if value is not None:
        orjson.dumps(value)  # what it returns can be written back (no lone surrogate, no unknown type)


@PROPERTY
@given(JSON)
def test_parse_json_reads_back_any_json_value(value: Any) -> None:
    text = orjson.dumps(value)  # NaN and infinities are written as null
    assert orjson.dumps(parse_json(text)) == text


# --- shipml's own API: /predict, /predict/batch, /feedback ------------------------------------------------

FEATURES = st.fixed_dictionaries({n: SCALARS for n in NAMES})
KEY = st.text(min_size=1, max_size=8) | st.integers(0, 10**6)
WRAPPED = st.fixed_dictionaries({"features": FEATURES}, optional={"id": KEY})


@PROPERTY
@given(near(WRAPPED))
def test_predict_body_decodes_to_features_or_a_4xx(body: Any) -> None:
    features = decoded_or_4xx(lambda: shipml_protocol.one_record(body))
    if features is not None:
        assert isinstance(features, dict)
        assert features is body["features"]


@PROPERTY
@given(
    near(st.lists(WRAPPED | FEATURES, max_size=LIMIT + 1).flatmap(lambda rs: st.sampled_from([rs, {"records": rs}])))
)
def test_batch_body_decodes_to_records_and_keys_or_a_4xx(body: Any) -> None:
    decoded = decoded_or_4xx(lambda: shipml_protocol.batch_records_and_keys(body, LIMIT))
    if decoded is not None:
        records, keys = decoded
        assert len(records) == len(keys) <= LIMIT
        assert all(k is None or (isinstance(k, str) and 0 < len(k) <= 256) for k in keys)


@PROPERTY
@given(JSON)
def test_a_routing_key_is_text_of_1_to_256_characters_or_none(value: Any) -> None:
    key = shipml_protocol.routing_key(value)
    assert key is None or (isinstance(key, str) and 0 < len(key) <= 256)


PREDICTION_ID = st.text(min_size=1, max_size=64)
FEEDBACK = st.fixed_dictionaries({"prediction_id": PREDICTION_ID, "label": st.text() | st.integers() | st.booleans()})
FEEDBACK |= st.fixed_dictionaries({"prediction_id": PREDICTION_ID, "value": st.floats() | st.integers()})


@PROPERTY
@given(near(FEEDBACK))
def test_feedback_body_decodes_or_is_a_4xx(body: Any) -> None:
    fb = decoded_or_4xx(lambda: shipml_protocol.feedback_request(body))
    if fb is not None:
        assert isinstance(fb.prediction_id, str) and 0 < len(fb.prediction_id) <= 64
        assert (fb.label is None) != (fb.value is None)
        assert fb.value is None or isinstance(fb.value, float)
        assert fb.label is None or len(fb.label) <= shipml_protocol.MAX_LABEL_CHARS


# --- MLflow's /invocations: dataframe_split, dataframe_records, instances, inputs ---------------------------


def _mlflow_shapes(rows: list[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    columns = {n: [r[n] for r in rows] for n in NAMES}
    split = {"columns": NAMES, "data": [[r[n] for n in NAMES] for r in rows]}
    return st.sampled_from(
        [
            {"dataframe_split": split},
            {"dataframe_split": {**split, "index": list(range(len(rows)))}},
            {"dataframe_records": rows},
            {"instances": rows},
            {"instances": columns},
            {"inputs": rows},
            {"inputs": columns},
        ]
    )


MLFLOW_BODY = st.lists(FEATURES, min_size=1, max_size=LIMIT + 1).flatmap(_mlflow_shapes)


@PROPERTY
@given(near(MLFLOW_BODY) | st.dictionaries(st.sampled_from(mlflow.FORMATS), JSON, min_size=2))
def test_invocations_body_decodes_to_records_or_a_4xx(body: Any) -> None:
    records = decoded_or_4xx(lambda: mlflow.decode_invocations(body, LIMIT))
    if records is not None:
        assert isinstance(records, list) and len(records) <= LIMIT


# --- Open Inference Protocol v2: /v2/models/{name}/infer -------------------------------------------------

_VALUES = {
    "FP64": st.floats(allow_nan=False, allow_infinity=False),
    "BOOL": st.booleans(),
    "BYTES": st.text(max_size=8),
}


@st.composite
def json_tensors(draw: st.DrawFn) -> dict[str, Any]:
    """A valid JSON infer request: one tensor per feature (some optional ones left out), ``rows`` values each."""
    rows = draw(st.integers(0, LIMIT + 1))
    inputs = []
    for spec in SIGNATURE.inputs:
        if spec.name not in SIGNATURE.required and draw(st.booleans()):
            continue
        data = draw(st.lists(_VALUES[spec.datatype], min_size=rows, max_size=rows))
        nested = draw(st.booleans())
        shape = [rows, 1] if nested else [rows]
        inputs.append(
            {
                "name": spec.name,
                "datatype": spec.datatype,
                "shape": shape,
                "data": [[v] for v in data] if nested else data,
            }
        )
    body: dict[str, Any] = {"inputs": draw(st.permutations(inputs))}
    if draw(st.booleans()):
        body["outputs"] = [
            {"name": n, "parameters": {"binary_data": draw(st.booleans())}}
            for n in draw(st.lists(st.sampled_from(OUTPUTS), unique=True))
        ]
    if draw(st.booleans()):
        body["parameters"] = {"binary_data_output": draw(st.booleans())}
    if draw(st.booleans()):
        body["id"] = draw(st.text(max_size=8))
    return body


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
@given(near(json_tensors()))
@example({"inputs": [{"name": "tenure", "datatype": {}, "shape": [0], "data": []}]})
@example({"inputs": [{"name": "tenure", "datatype": ["FP64"], "shape": [1], "data": [1]}]})
def test_infer_body_decodes_or_is_a_4xx(body: Any) -> None:
    request = decoded_or_4xx(lambda: oip_v2.decode_infer(body, memoryview(b""), SIGNATURE, LIMIT))
    if request is not None:
        check_infer_request(request)


_PACK = {"FP64": "<d", "FP32": "<f", "INT64": "<q", "INT32": "<i", "UINT8": "<B", "BOOL": "<?"}


@st.composite
def binary_request(draw: st.DrawFn) -> tuple[dict[str, Any], bytes]:
    """A valid binary infer request (every tensor binary, in a datatype that fits its feature): header, blobs."""
    rows = draw(st.integers(0, LIMIT + 1))
    inputs, blobs = [], b""
    for spec in SIGNATURE.inputs:
        if spec.datatype == "BYTES":
            texts = [draw(st.text(max_size=6)).encode() for _ in range(rows)]
            blob, datatype = b"".join(struct.pack("<I", len(t)) + t for t in texts), "BYTES"
        else:
            datatype = draw(
                st.sampled_from(["BOOL"] if spec.datatype == "BOOL" else ["FP64", "FP32", "INT64", "INT32"])
            )
            fmt = _PACK[datatype]
            values = [draw(st.booleans()) if datatype == "BOOL" else draw(st.integers(0, 100)) for _ in range(rows)]
            blob = b"".join(struct.pack(fmt, v) for v in values)
        inputs.append(
            {"name": spec.name, "datatype": datatype, "shape": [rows], "parameters": {"binary_data_size": len(blob)}}
        )
        blobs += blob
    return {"inputs": inputs}, blobs


@st.composite
def binary_body(draw: st.DrawFn) -> tuple[bytes, str | None]:
    """A binary infer body and its Inference-Header-Content-Length, each perhaps damaged."""
    header, blobs = draw(binary_request())
    header = draw(st.one_of(st.just(header), mutated(st.just(header))))
    head = orjson.dumps(header)
    blobs = draw(
        st.sampled_from(
            [
                blobs,
                blobs[:-1],
                blobs + b"\0",
                bytes(b ^ 0xFF for b in blobs),  # BOOL bytes past 1, lengths of BYTES elements past the end
            ]
        )
        | st.binary(max_size=48)
    )
    exact = str(len(head))
    length = draw(
        st.just(exact)
        | st.just(exact)
        | st.sampled_from([str(len(head) - 1), str(len(head) + 1), None, "0", "", " 1 ", "-1"])
        | st.integers(-2, 400).map(str)
        | st.text(max_size=6)
        | st.sampled_from(["\xb2", "\u0663"])  # "digits" to str.isdigit: a superscript two, an Arabic-Indic three
    )
    return head + blobs, length


@PROPERTY
@given(binary_body())
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
