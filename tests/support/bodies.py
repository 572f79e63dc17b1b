"""Hypothesis strategies for request bodies of every protocol, for a given model: valid bodies, then mutated (a
value anywhere replaced by any JSON value, or a key or element dropped), so that draws get past a decoder's
first check and into the fields behind it; and any JSON value at all."""

from __future__ import annotations

import struct
from typing import Any

import orjson
from hypothesis import strategies as st

from shipml.core.schema import Feature, FeatureSchema
from shipml.server.protocols.oip_v2 import ModelSignature

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
    """A valid value with up to three places replaced by any JSON value or dropped (or none)."""
    value = draw(valid)
    for _ in range(draw(st.integers(0, 3))):
        path = draw(st.sampled_from(_paths(value)))
        drop = bool(path) and draw(st.booleans())
        value = _replaced(value, path, None if drop else draw(JSON), drop)
    return value


def near(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a mutated valid value, sometimes any JSON value."""
    return st.one_of(mutated(valid), mutated(valid), mutated(valid), JSON)


def value_of(f: Feature) -> st.SearchStrategy[Any]:
    """A value ``f`` accepts, mostly; any scalar sometimes."""
    if f.kind == "categorical":
        valid: st.SearchStrategy[Any] = st.sampled_from(f.categories) if f.categories else st.text(max_size=8)
    elif f.kind == "boolean":
        valid = st.booleans()
    else:
        low = 0.0 if f.min is None else f.min
        high = low + 100 if f.max is None else f.max
        valid = st.integers(int(low), int(high)) if f.kind == "integer" else st.floats(low, high)
    if f.nullable:
        valid |= st.none()
    return st.one_of(valid, valid, valid, SCALARS)


def features(schema: FeatureSchema) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({f.name: value_of(f) for f in schema.features})


def predict_bodies(schema: FeatureSchema) -> st.SearchStrategy[Any]:
    """``/predict``: ``{"features": {...}, "id": optional}``."""
    key = st.text(min_size=1, max_size=8) | st.integers(0, 10**6)
    return near(st.fixed_dictionaries({"features": features(schema)}, optional={"id": key}))


def batch_bodies(schema: FeatureSchema, limit: int) -> st.SearchStrategy[Any]:
    """``/predict/batch``: ``{"records": [...]}`` or the array, each record wrapped or bare."""
    key = st.text(min_size=1, max_size=8) | st.integers(0, 10**6)
    record = st.fixed_dictionaries({"features": features(schema)}, optional={"id": key}) | features(schema)
    rows = st.lists(record, max_size=limit + 1)
    return near(rows.flatmap(lambda rs: st.sampled_from([rs, {"records": rs}])))


def feedback_bodies(ids: st.SearchStrategy[str] | None = None) -> st.SearchStrategy[Any]:
    """``/feedback``: a prediction id and a label or a value."""
    pid = st.text(min_size=1, max_size=64) if ids is None else ids | st.text(min_size=1, max_size=64)
    return near(
        st.fixed_dictionaries({"prediction_id": pid, "label": st.text() | st.integers() | st.booleans()})
        | st.fixed_dictionaries({"prediction_id": pid, "value": st.floats() | st.integers()})
    )


def _mlflow_shapes(rows: list[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    names = list(rows[0])
    columns = {n: [r[n] for r in rows] for n in names}
    split = {"columns": names, "data": [[r[n] for n in names] for r in rows]}
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


def invocations_bodies(schema: FeatureSchema, limit: int, formats: tuple[str, ...]) -> st.SearchStrategy[Any]:
    """``/invocations``: each of MLflow's four formats (and the column-oriented ones), or two formats at once."""
    valid = st.lists(features(schema), min_size=1, max_size=limit + 1).flatmap(_mlflow_shapes)
    return near(valid) | st.dictionaries(st.sampled_from(formats), JSON, min_size=2)


_JSON_VALUES = {
    "FP64": st.floats(allow_nan=False, allow_infinity=False),
    "BOOL": st.booleans(),
    "BYTES": st.text(max_size=8),
}


@st.composite
def _json_tensors(draw: st.DrawFn, signature: ModelSignature, limit: int) -> dict[str, Any]:
    rows = draw(st.integers(0, limit + 1))
    inputs = []
    for spec in signature.inputs:
        if spec.name not in signature.required and draw(st.booleans()):
            continue
        data = draw(st.lists(_JSON_VALUES[spec.datatype], min_size=rows, max_size=rows))
        nested = draw(st.booleans())
        inputs.append(
            {
                "name": spec.name,
                "datatype": spec.datatype,
                "shape": [rows, 1] if nested else [rows],
                "data": [[v] for v in data] if nested else data,
            }
        )
    body: dict[str, Any] = {"inputs": draw(st.permutations(inputs))}
    outputs = [t.name for t in signature.outputs]
    if draw(st.booleans()):
        body["outputs"] = [
            {"name": n, "parameters": {"binary_data": draw(st.booleans())}}
            for n in draw(st.lists(st.sampled_from(outputs), unique=True))
        ]
    if draw(st.booleans()):
        body["parameters"] = {"binary_data_output": draw(st.booleans())}
    if draw(st.booleans()):
        body["id"] = draw(st.text(max_size=8))
    return body


def infer_bodies(signature: ModelSignature, limit: int) -> st.SearchStrategy[Any]:
    """``/v2/models/{name}/infer`` with JSON tensors: one per feature, ``rows`` values each."""
    return near(_json_tensors(signature, limit))


_PACK = {"FP64": "<d", "FP32": "<f", "INT64": "<q", "INT32": "<i", "BOOL": "<?"}


@st.composite
def _binary_request(draw: st.DrawFn, signature: ModelSignature, limit: int) -> tuple[dict[str, Any], bytes]:
    rows = draw(st.integers(0, limit + 1))
    inputs, blobs = [], b""
    for spec in signature.inputs:
        if spec.datatype == "BYTES":
            texts = [draw(st.text(max_size=6)).encode() for _ in range(rows)]
            blob, datatype = b"".join(struct.pack("<I", len(t)) + t for t in texts), "BYTES"
        else:
            datatype = draw(
                st.sampled_from(["BOOL"] if spec.datatype == "BOOL" else ["FP64", "FP32", "INT64", "INT32"])
            )
            values = [draw(st.booleans()) if datatype == "BOOL" else draw(st.integers(0, 100)) for _ in range(rows)]
            blob = b"".join(struct.pack(_PACK[datatype], v) for v in values)
        inputs.append(
            {"name": spec.name, "datatype": datatype, "shape": [rows], "parameters": {"binary_data_size": len(blob)}}
        )
        blobs += blob
    return {"inputs": inputs}, blobs


@st.composite
def binary_infer_bodies(draw: st.DrawFn, signature: ModelSignature, limit: int) -> tuple[bytes, str | None]:
    """A binary infer body (JSON header, then the tensors' bytes) and its Inference-Header-Content-Length, each
    perhaps damaged: the header mutated, bytes cut, added, flipped or any, the length off, absent or not a number."""
    header, blobs = draw(_binary_request(signature, limit))
    head = orjson.dumps(draw(st.one_of(st.just(header), mutated(st.just(header)))))
    blobs = draw(
        st.sampled_from([blobs, blobs[:-1], blobs + b"\0", bytes(b ^ 0xFF for b in blobs)]) | st.binary(max_size=48)
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
