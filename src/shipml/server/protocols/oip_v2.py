"""The Open Inference Protocol v2 (REST) with its binary tensor data extension: pure decode and encode.

A request is a JSON header, optionally followed by binary tensor data (the
``Inference-Header-Content-Length`` header says where the JSON ends); each
input tensor is one feature, one value per row. Everything that can be
refused is refused here, before a record is built or a prediction made: the
row count against ``serve.max_batch``, tensor names, types, shapes, blob
sizes, and the names of the requested outputs.

Past ~400 lines on purpose: one protocol's codec, whose decoder and encoder share the model's signature, the
tensor datatypes and the binary layout; split, each half would import the other's private types.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from shipml.core.prediction import Prediction, Status
from shipml.core.schema import FeatureSchema
from shipml.server.errors import ApiError

HEADER_LENGTH = "Inference-Header-Content-Length"
EXTENSIONS = ("binary_tensor_data",)  # what GET /v2 announces: only what is implemented here
FEATURE_DATATYPE = {"numeric": "FP64", "integer": "FP64", "boolean": "BOOL", "categorical": "BYTES"}
# Binary layout of each fixed-size datatype: little-endian, row major, no padding (BOOL: one byte, 0 or 1).
_NUMPY: dict[str, str] = {
    "BOOL": "u1",
    "UINT8": "u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "INT8": "i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}
DATATYPES = (*_NUMPY, "BYTES")
_KNOWN_DATATYPES = frozenset(DATATYPES)
_LENGTH = struct.Struct("<I")  # a BYTES element: 4-byte little-endian length, then the bytes


def _bad(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


_Where = tuple[int, str]  # (index, name) of an input tensor, formatted by _at only for an error message


def _at(where: _Where) -> str:
    return f"inputs[{where[0]}] {where[1][:64]!r}"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool


@dataclass(frozen=True)
class ModelSignature:
    """A model as the protocol sees it: one input tensor per feature, the outputs it can answer."""

    name: str
    version: str
    inputs: tuple[TensorSpec, ...]
    required: frozenset[str]  # inputs that must be sent (features that are not nullable)
    outputs: tuple[TensorSpec, ...]
    classes: tuple[str, ...]  # empty for regression
    input_names: frozenset[str]
    every_output: tuple[tuple[RequestedOutput, ...], tuple[RequestedOutput, ...]]  # all as JSON, all binary

    @classmethod
    def of(cls, name: str, version: str, schema: FeatureSchema, classes: Sequence[object]) -> ModelSignature:
        regression = schema.target.task == "regression"
        labels = () if regression else tuple(str(c) for c in classes)
        outputs = (
            (TensorSpec("value", "FP64", (-1,)),)
            if regression
            else (TensorSpec("probabilities", "FP64", (-1, len(labels))), TensorSpec("predicted_class", "BYTES", (-1,)))
        )
        outputs = (*outputs, TensorSpec("prediction_id", "BYTES", (-1,)))
        return cls(
            name=name,
            version=version,
            inputs=tuple(TensorSpec(f.name, FEATURE_DATATYPE[f.kind], (-1,)) for f in schema.features),
            required=frozenset(f.name for f in schema.features if not f.nullable),
            outputs=outputs,
            classes=labels,
            input_names=frozenset(schema.names),
            every_output=(
                tuple(RequestedOutput(t.name, False) for t in outputs),
                tuple(RequestedOutput(t.name, True) for t in outputs),
            ),
        )

    def metadata(self) -> dict[str, Any]:
        """The model metadata response (``GET /v2/models/{name}``)."""
        return {
            "name": self.name,
            "versions": [self.version],
            "platform": "shipml_sklearn",
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "parameters": {"classes": list(self.classes)},
        }


def server_metadata(version: str) -> dict[str, Any]:
    """The server metadata response (``GET /v2``)."""
    return {"name": "shipml", "version": version, "extensions": list(EXTENSIONS)}


@dataclass(frozen=True)
class InferRequest:
    """A decoded inference request: the feature columns (row count checked), the outputs to answer."""

    columns: dict[str, list[Any]]
    rows: int
    outputs: tuple[RequestedOutput, ...]
    id: str | None = None

    def records(self) -> list[dict[str, Any]]:
        """One feature dict per row, for the prediction service (built only after every check passed)."""
        columns = self.columns.items()  # a dict display per row: measured faster than dict(zip(...))
        return [{name: values[j] for name, values in columns} for j in range(self.rows)]


def split_body(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    """The JSON part and the binary part of an infer body, as ``Inference-Header-Content-Length`` divides it."""
    if header_length is None:
        return body, memoryview(b"")
    text = header_length.strip()
    if not (text.isascii() and text.isdigit()):  # str.isdigit alone takes "²", which int() refuses
        raise _bad(f"{HEADER_LENGTH} must be a byte count, got {text[:32]!r}")
    n = int(text)
    if n == 0 or n > len(body):
        raise _bad(f"{HEADER_LENGTH} is {n}, but the body has {len(body)} bytes; expected 1 to {len(body)}")
    view = memoryview(body)
    return bytes(view[:n]), view[n:]


def _parameters(container: Mapping[str, Any], where: str | _Where) -> Mapping[str, Any]:
    """``container["parameters"]``: absent is no parameters; anything but an object (null too) is a 400."""
    if "parameters" not in container:
        return {}
    value = container["parameters"]
    if not isinstance(value, dict):
        prefix = f"{_at(where)}: " if isinstance(where, tuple) else where
        raise _bad(f"{prefix}parameters: expected an object of parameters, got {_type(value)}")
    return value


def _flag(params: Mapping[str, Any], key: str, where: str) -> bool:
    """A boolean parameter (false when absent)."""
    value = params.get(key, False)
    if not isinstance(value, bool):
        raise _bad(f"{where}.{key}: expected true or false, got {_type(value)}")
    return value


_TYPE_NAMES: dict[type, str] = {list: "an array", dict: "an object", str: "a string"}


def _type(value: Any) -> str:
    if value is None:
        return "null"
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def decode_infer(body: Any, blobs: memoryview, signature: ModelSignature, limit: int) -> InferRequest:
    """Check an inference request against the model and ``limit`` rows; refuse with 400/413 before any
    per-row value is built (413 ``batch_too_large`` names the row count and the limit)."""
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list) or not body["inputs"]:
        raise _bad('expected {"inputs": [{"name", "shape", "datatype", "data"}, ...]}')
    params = _parameters(body, "")
    outputs = _requested_outputs(body.get("outputs"), signature, _flag(params, "binary_data_output", "parameters"))
    columns: dict[str, list[Any]] = {}
    rows: int | None = None
    offset = 0
    for i, tensor in enumerate(body["inputs"]):
        name, datatype, n = _tensor_head(i, tensor, signature, columns, limit)
        if rows is not None and n != rows:
            raise _bad(f"{_at((i, name))}: {n} rows, other inputs have {rows}")
        rows = n
        size = _binary_size(tensor, (i, name), offset, len(blobs))
        if size is None:
            columns[name] = _from_json(datatype, tensor.get("data"), n, (i, name))
        else:
            columns[name] = _from_binary(datatype, blobs[offset : offset + size], n, (i, name))
            offset += size
    if offset != len(blobs):
        raise _bad(
            f"the body has {len(blobs)} bytes of binary data, but the inputs' binary_data_size add up to {offset}"
        )
    if not signature.required.issubset(columns):
        missing = [t.name for t in signature.inputs if t.name in signature.required and t.name not in columns]
        raise _bad(f"missing input(s) {', '.join(map(repr, missing))}; every non-nullable feature is required")
    request_id = body.get("id")
    return InferRequest(columns, rows or 0, outputs, request_id if isinstance(request_id, str) else None)


def _tensor_head(
    i: int, tensor: Any, signature: ModelSignature, seen: Mapping[str, object], limit: int
) -> tuple[str, str, int]:
    """An input tensor's name, datatype and row count, checked (413 past ``limit`` rows)."""
    if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
        raise _bad(f"inputs[{i}]: expected an object with a string `name`")
    name: str = tensor["name"]
    where = (i, name)
    if name not in signature.input_names:
        names = ", ".join(t.name for t in signature.inputs)
        raise _bad(f"{_at(where)}: the model has no such input; its inputs are {names}")
    if name in seen:
        raise _bad(f"{_at(where)}: given twice")
    datatype = tensor.get("datatype")
    if not isinstance(datatype, str) or datatype not in _KNOWN_DATATYPES:  # an object or array is not hashable
        shown = repr(datatype[:32]) if isinstance(datatype, str) else _type(datatype)
        raise _bad(f"{_at(where)}: datatype must be one of {', '.join(DATATYPES)}, got {shown}")
    n = _rows_of(tensor.get("shape"), where)
    if n > limit:
        raise ApiError(413, "batch_too_large", f"{_at(where)}: {n} rows; the limit is {limit}")
    return name, datatype, n


def _binary_size(tensor: dict[str, Any], where: _Where, offset: int, available: int) -> int | None:
    """The tensor's ``binary_data_size`` (None when its data is JSON), checked against the bytes left."""
    if "parameters" not in tensor:
        return None
    size = _parameters(tensor, where).get("binary_data_size")
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise _bad(f"{_at(where)}: binary_data_size must be a byte count, got {str(size)[:32]!r}")
    if offset + size > available:
        raise _bad(
            f"{_at(where)}: binary_data_size {size} runs past the end of the binary data "
            f"({available} bytes after the JSON header; is {HEADER_LENGTH} right?)"
        )
    return int(size)


def _rows_of(shape: Any, where: _Where) -> int:
    """The row count a shape declares: ``[n]`` or ``[n, 1]`` (one value per row)."""
    if type(shape) is list and len(shape) == 1 and type(shape[0]) is int and shape[0] >= 0:
        return shape[0]  # the common case, checked first
    if (
        not isinstance(shape, list)
        or not shape
        or not all(type(s) is int and s >= 0 for s in shape)
        or len(shape) > 2
        or (len(shape) == 2 and shape[1] != 1)
    ):
        raise _bad(f"{_at(where)}: shape must be [rows] or [rows, 1], got {str(shape)[:64]}")
    return int(shape[0])


def _from_json(datatype: str, given: Any, rows: int, where: _Where) -> list[Any]:
    if not isinstance(given, list):
        raise _bad(f"{_at(where)}: needs `data` (a JSON array) or parameters.binary_data_size")
    data: list[Any] = given
    if len(data) != rows:
        raise _bad(f"{_at(where)}: {len(data)} values for shape of {rows} rows")
    if data and isinstance(data[0], list):  # [[v], [v], ...] for shape [rows, 1]
        if not all(isinstance(row, list) and len(row) == 1 for row in data):
            raise _bad(f"{_at(where)}: nested data must hold one value per row")
        data = [row[0] for row in data]
    if datatype == "BOOL":  # 0/1 are booleans in a BOOL tensor
        data = [bool(v) if type(v) is int and v in (0, 1) else v for v in data]
    return data


def _from_binary(datatype: str, blob: memoryview, rows: int, where: _Where) -> list[Any]:
    if datatype == "BYTES":
        return _bytes_elements(blob, rows, where)
    dtype = np.dtype(_NUMPY[datatype])
    if len(blob) != rows * dtype.itemsize:
        raise _bad(
            f"{_at(where)}: binary_data_size is {len(blob)} bytes; {rows} {datatype} values take {rows * dtype.itemsize}"
        )
    array = np.frombuffer(blob, dtype=dtype)
    if datatype == "BOOL":
        if rows and int(array.max()) > 1:
            raise _bad(f"{_at(where)}: a binary BOOL element must be the byte 0 or 1")
        return array.astype(bool).tolist()  # type: ignore[no-any-return]
    values: list[Any] = array.tolist()
    if dtype.kind == "f" and np.isnan(array).any():  # binary tensors have no null: NaN stands for a missing value
        values = [None if math.isnan(v) else v for v in values]
    return values


def _bytes_elements(blob: memoryview, rows: int, where: _Where) -> list[Any]:
    data = bytes(blob)
    values: list[Any] = []
    offset = 0
    for _ in range(rows):
        if offset + 4 > len(data):
            raise _bad(f"{_at(where)}: BYTES data ends after {len(values)} of {rows} elements")
        (length,) = _LENGTH.unpack_from(data, offset)
        offset += 4
        if offset + length > len(data):
            raise _bad(f"{_at(where)}: BYTES element {len(values)} is {length} bytes, past the end of its data")
        try:
            values.append(data[offset : offset + length].decode())
        except UnicodeDecodeError:
            raise _bad(f"{_at(where)}: BYTES element {len(values)} is not UTF-8 text") from None
        offset += length
    if offset != len(data):
        raise _bad(f"{_at(where)}: {len(data) - offset} bytes left over after {rows} BYTES elements")
    return values


def _requested_outputs(wanted: Any, signature: ModelSignature, binary: bool) -> tuple[RequestedOutput, ...]:
    """The outputs to answer, checked before anything is predicted or logged; all of them when none is named."""
    if wanted is None:
        return signature.every_output[binary]
    known = [t.name for t in signature.outputs]
    if not isinstance(wanted, list):
        raise _bad(f"outputs: expected an array of {{name, parameters}}, got {_type(wanted)}")
    chosen: list[RequestedOutput] = []
    for i, output in enumerate(wanted):
        if not isinstance(output, dict) or not isinstance(output.get("name"), str):
            raise _bad(f"outputs[{i}]: expected an object with a string `name`")
        name = output["name"]
        if name not in known:
            raise _bad(f"outputs[{i}]: the model has no output {name[:64]!r}; its outputs are {', '.join(known)}")
        params = _parameters(output, f"outputs[{i}].")
        # binary_data on an output overrides the request's binary_data_output
        as_binary = _flag(params, "binary_data", f"outputs[{i}].parameters") if "binary_data" in params else binary
        chosen.append(RequestedOutput(name, as_binary))
    return tuple(chosen) or signature.every_output[binary]


def invalid_records_error(predictions: Sequence[Prediction]) -> ApiError | None:
    """422 for refused records; the message itself names them, since the protocol's error is one string."""
    details = [e for p in predictions for e in p.errors]
    if not details:
        return None
    broken = sum(1 for p in predictions if p.status is Status.OUTPUT_INVALID)
    if broken:
        return ApiError(
            502,
            "model_output_invalid",
            f"the model's output is not a finite number for {broken} record(s)",
            [e.to_dict() for e in details],
        )
    shown = "; ".join(f"record {e.record}, {e.feature!r} ({e.rule}): {e.message}" for e in details[:3])
    more = f"; and {len(details) - 3} more" if len(details) > 3 else ""
    failed = sum(1 for p in predictions if p.status is Status.INVALID)
    return ApiError(
        422,
        "validation_error",
        f"{failed} record(s) failed validation: {shown}{more}",
        [e.to_dict() for e in details],
    )


@dataclass(frozen=True)
class EncodedResponse:
    """An infer response body; ``header_length`` is set when binary outputs follow the JSON."""

    body: bytes
    header_length: int | None


def encode_infer(
    signature: ModelSignature, request: InferRequest, predictions: Sequence[Prediction]
) -> EncodedResponse:
    """The inference response: each requested output as JSON data or, when asked, as binary data."""
    n = len(predictions)
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for wanted in request.outputs:
        datatype, shape, values = _output(wanted.name, signature, predictions, n)
        out: dict[str, Any] = {"name": wanted.name, "datatype": datatype, "shape": shape}
        if wanted.binary:
            blob = _serialize_bytes(values) if datatype == "BYTES" else np.asarray(values, dtype="<f8").tobytes()
            out["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            out["data"] = values
        outputs.append(out)
    answer: dict[str, Any] = {"model_name": signature.name, "model_version": signature.version, "outputs": outputs}
    if request.id is not None:
        answer["id"] = request.id
    header = orjson.dumps(answer)
    if not blobs:
        return EncodedResponse(header, None)
    return EncodedResponse(header + b"".join(blobs), len(header))


def _output(
    name: str, signature: ModelSignature, predictions: Sequence[Prediction], n: int
) -> tuple[str, list[int], list[Any]]:
    if name == "probabilities":
        classes = signature.classes
        flat = [q[c] for p in predictions if (q := p.probabilities) is not None for c in classes]
        return "FP64", [n, len(classes)], flat
    if name == "predicted_class":
        return "BYTES", [n], [str(p.label) for p in predictions]
    if name == "value":
        return "FP64", [n], [p.value for p in predictions]
    return "BYTES", [n], [p.id for p in predictions]


def _serialize_bytes(values: Sequence[Any]) -> bytes:
    parts: list[bytes] = []
    for v in values:
        raw = str(v).encode()
        parts.append(_LENGTH.pack(len(raw)))
        parts.append(raw)
    return b"".join(parts)
