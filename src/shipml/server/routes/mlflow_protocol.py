"""MLflow's scoring protocol: ``POST /invocations`` as ``mlflow models serve`` speaks it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from shipml.server.errors import ApiError, json_response
from shipml.server.http import authorize, read_json
from shipml.server.routes.common import deployment, raise_for_invalid, state

router = APIRouter()
FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")


def records_from_payload(body: Any) -> list[Any]:
    """The records of any of MLflow's four JSON input formats."""
    if not isinstance(body, dict):
        raise ApiError(400, "bad_request", f"expected a JSON object with one of the keys {', '.join(FORMATS)}")
    keys = [k for k in FORMATS if k in body]
    if len(keys) != 1:
        raise ApiError(
            400, "bad_request", f"expected exactly one of the keys {', '.join(FORMATS)}, got {sorted(body)[:5]}"
        )
    data = body[keys[0]]
    if keys[0] == "dataframe_split":
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("columns"), list)
            or not isinstance(data.get("data"), list)
        ):
            raise ApiError(400, "bad_request", "dataframe_split needs `columns` and `data` lists")
        columns = data["columns"]
        rows = []
        for i, row in enumerate(data["data"]):
            if not isinstance(row, list) or len(row) != len(columns):
                raise ApiError(
                    400, "bad_request", f"dataframe_split data[{i}]: expected a list of {len(columns)} values"
                )
            rows.append(dict(zip(columns, row, strict=True)))
        return rows
    if isinstance(data, dict):  # column-oriented: {"feature": [values...]}
        lengths = {len(v) if isinstance(v, list) else -1 for v in data.values()}
        if len(lengths) != 1 or -1 in lengths:
            raise ApiError(400, "bad_request", f"{keys[0]}: a column-oriented object needs equal-length lists")
        n = lengths.pop()
        return [{k: v[i] for k, v in data.items()} for i in range(n)]
    if not isinstance(data, list):
        raise ApiError(400, "bad_request", f"{keys[0]}: expected a list of records")
    return data


@router.post("/invocations", tags=["mlflow"], summary="MLflow scoring protocol")
async def invocations(request: Request) -> Response:
    # Errors here are answered in MLflow's shape too (`error_code`, `message`) by server/errors.py.
    authorize(request, "predict")
    body = await read_json(request)
    records = records_from_payload(body)
    limit = state(request).settings.serve.max_batch
    if len(records) > limit:
        raise ApiError(413, "batch_too_large", f"{len(records)} records; the limit is {limit}")
    dep = deployment(request)
    results = await state(request).service.run(dep, records)
    raise_for_invalid(results)
    if dep.bundle.schema.target.task == "regression":
        predictions: list[Any] = [r.value for r in results]
    else:
        predictions = [r.label for r in results]
    return json_response({"predictions": predictions}, headers={"X-Model-Version": dep.version})
