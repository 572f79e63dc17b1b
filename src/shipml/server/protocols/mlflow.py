"""MLflow's scoring protocol (``POST /invocations`` as ``mlflow models serve`` speaks it): pure decode and encode.

Column-oriented bodies (``dataframe_split``, ``inputs``/``instances`` as an
object of columns) are checked against ``serve.max_batch`` by their row count
before a single per-row dict is built: an 8 MB body of one long column would
otherwise become millions of dicts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shipml.core.prediction import Prediction
from shipml.server.errors import ApiError

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")


def _bad(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


def _check_rows(n: int, limit: int) -> None:
    if n > limit:
        raise ApiError(413, "batch_too_large", f"{n} records; the limit is {limit}")


def decode_invocations(body: Any, limit: int) -> list[Any]:
    """The records of any of MLflow's four JSON input formats, at most ``limit`` of them (else 413)."""
    if not isinstance(body, dict):
        raise _bad(f"expected a JSON object with one of the keys {', '.join(FORMATS)}")
    keys = [k for k in FORMATS if k in body]
    if len(keys) != 1:
        raise _bad(f"expected exactly one of the keys {', '.join(FORMATS)}, got {sorted(body)[:5]}")
    key = keys[0]
    data = body[key]
    if key == "dataframe_split":
        return _split(data, limit)
    if isinstance(data, dict):  # column-oriented: {"feature": [values...]}
        return _columns(key, data, limit)
    if not isinstance(data, list):
        raise _bad(f"{key}: expected a list of records or an object of columns")
    _check_rows(len(data), limit)
    return data


def _split(data: Any, limit: int) -> list[dict[str, Any]]:
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("columns"), list)
        or not isinstance(data.get("data"), list)
    ):
        raise _bad("dataframe_split needs `columns` and `data` lists")
    rows: list[Any] = data["data"]
    _check_rows(len(rows), limit)
    columns: list[Any] = data["columns"]
    for i, column in enumerate(columns):
        if not isinstance(column, str):
            raise _bad(f"dataframe_split columns[{i}]: expected a column name (a string), got {type(column).__name__}")
    width = len(columns)
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != width:
            raise _bad(f"dataframe_split data[{i}]: expected a list of {width} values")
    return [dict(zip(columns, row, strict=True)) for row in rows]


def _columns(key: str, data: dict[str, Any], limit: int) -> list[dict[str, Any]]:
    if not data or not all(isinstance(v, list) for v in data.values()):
        raise _bad(f"{key}: a column-oriented object needs one list of values per column")
    lengths = {len(v) for v in data.values()}
    if len(lengths) != 1:
        raise _bad(f"{key}: a column-oriented object needs equal-length lists, got lengths {sorted(lengths)[:5]}")
    _check_rows(lengths.pop(), limit)
    names = list(data)
    return [dict(zip(names, row, strict=True)) for row in zip(*data.values(), strict=True)]


def encode_predictions(predictions: Sequence[Prediction], regression: bool) -> dict[str, Any]:
    """``{"predictions": [...]}``: the value of each record, or its predicted class."""
    if regression:
        return {"predictions": [p.value for p in predictions]}
    return {"predictions": [p.label for p in predictions]}
