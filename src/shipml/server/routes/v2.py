"""The Open Inference Protocol v2 (REST): health, model metadata, infer with one named tensor per feature."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from shipml.server.errors import ApiError, json_response
from shipml.server.http import authorize, read_json
from shipml.server.model_manager import Deployment
from shipml.server.routes.common import deployment, raise_for_invalid, state

router = APIRouter(prefix="/v2", tags=["open-inference-v2"])
_DATATYPE = {"numeric": "FP64", "integer": "FP64", "boolean": "BOOL", "categorical": "BYTES"}


@router.get("/health/live")
async def live() -> Response:
    return json_response({"live": True})


@router.get("/health/ready")
async def ready(request: Request) -> Response:
    ok = state(request).ready
    return json_response({"ready": ok}, 200 if ok else 503)


def _model_of(request: Request, name: str) -> Deployment:
    dep = deployment(request)
    if name != dep.name:
        raise ApiError(404, "unknown_model", f"this server serves {dep.name!r}, not {name[:64]!r}")
    return dep


@router.get("/models/{name}/ready")
async def model_ready(request: Request, name: str) -> Response:
    current = state(request).manager.current
    ok = current is not None and current.name == name
    return json_response({"name": name, "ready": ok}, 200 if ok else 503)


@router.get("/models/{name}")
async def metadata(request: Request, name: str) -> Response:
    authorize(request, "predict")
    dep = _model_of(request, name)
    schema = dep.bundle.schema
    classification = schema.target.task != "regression"
    outputs = (
        [
            {"name": "probabilities", "datatype": "FP64", "shape": [-1, len(dep.bundle.classes)]},
            {"name": "predicted_class", "datatype": "BYTES", "shape": [-1]},
        ]
        if classification
        else [{"name": "value", "datatype": "FP64", "shape": [-1]}]
    )
    return json_response(
        {
            "name": dep.name,
            "versions": [dep.version],
            "platform": "shipml_sklearn",
            "inputs": [{"name": f.name, "datatype": _DATATYPE[f.kind], "shape": [-1]} for f in schema.features],
            "outputs": [*outputs, {"name": "prediction_id", "datatype": "BYTES", "shape": [-1]}],
            "parameters": {"classes": [str(c) for c in dep.bundle.classes]},
        }
    )


def _records(body: Any, dep: Deployment) -> list[dict[str, Any]]:
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list) or not body["inputs"]:
        raise ApiError(400, "bad_request", 'expected {"inputs": [{name, shape, datatype, data}, ...]}')
    columns: dict[str, list[Any]] = {}
    n = None
    for i, tensor in enumerate(body["inputs"]):
        if (
            not isinstance(tensor, dict)
            or not isinstance(tensor.get("name"), str)
            or not isinstance(tensor.get("data"), list)
        ):
            raise ApiError(400, "bad_request", f"inputs[{i}]: needs `name` and `data`")
        if tensor.get("parameters", {}).get("binary_data_size") is not None:
            raise ApiError(
                400, "bad_request", "binary tensor data is not supported; send JSON data (binary_data=False)"
            )
        data = _flatten(tensor["data"])
        shape = tensor.get("shape")
        if isinstance(shape, list) and shape and all(isinstance(s, int) for s in shape):
            expected = 1
            for s in shape:
                expected *= s
            if expected != len(data) or (len(shape) == 2 and shape[1] != 1) or len(shape) > 2:
                raise ApiError(
                    400, "bad_request", f"inputs[{i}] {tensor['name']!r}: shape {shape} does not fit one value per row"
                )
        if n is not None and len(data) != n:
            raise ApiError(
                400, "bad_request", f"inputs[{i}] {tensor['name']!r}: {len(data)} values, other inputs have {n}"
            )
        n = len(data)
        if tensor.get("datatype") == "BOOL":
            data = [bool(v) if isinstance(v, bool | int) else v for v in data]
        columns[tensor["name"]] = data
    return [{k: v[j] for k, v in columns.items()} for j in range(n or 0)]


def _flatten(data: list[Any]) -> list[Any]:
    if data and isinstance(data[0], list):
        return [v for row in data for v in (row if isinstance(row, list) else [row])]
    return data


@router.post("/models/{name}/infer")
async def infer(request: Request, name: str) -> Response:
    authorize(request, "predict")
    body = await read_json(request)
    dep = _model_of(request, name)
    records = _records(body, dep)
    limit = state(request).settings.serve.max_batch
    if len(records) > limit:
        raise ApiError(413, "batch_too_large", f"{len(records)} rows; the limit is {limit}")
    results = await state(request).service.run(dep, records)
    raise_for_invalid(results)
    n = len(results)
    ids = [r.prediction_id for r in results]
    if dep.bundle.schema.target.task == "regression":
        outputs = [{"name": "value", "datatype": "FP64", "shape": [n], "data": [r.value for r in results]}]
    else:
        classes = [str(c) for c in dep.bundle.classes]
        flat = [r.probabilities[c] for r in results for c in classes if r.probabilities is not None]
        outputs = [
            {"name": "probabilities", "datatype": "FP64", "shape": [n, len(classes)], "data": flat},
            {"name": "predicted_class", "datatype": "BYTES", "shape": [n], "data": [str(r.label) for r in results]},
        ]
    outputs.append({"name": "prediction_id", "datatype": "BYTES", "shape": [n], "data": ids})
    wanted = body.get("outputs") if isinstance(body, dict) else None
    if isinstance(wanted, list) and wanted:
        names = {o.get("name") for o in wanted if isinstance(o, dict)}
        outputs = [o for o in outputs if o["name"] in names]
    answer = {"model_name": dep.name, "model_version": dep.version, "outputs": outputs}
    if isinstance(body, dict) and isinstance(body.get("id"), str):
        answer["id"] = body["id"]
    return json_response(answer)
