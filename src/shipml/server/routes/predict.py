"""shipml's own API: /predict, /predict/batch, /feedback."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from shipml.server.auth import key_from_headers
from shipml.server.errors import ApiError, json_response
from shipml.server.http import authorize, authorize_key, read_json
from shipml.server.routes.common import deployment, raise_for_invalid, state

if TYPE_CHECKING:
    from shipml.server.app import AppState
    from shipml.server.model_manager import Deployment

router = APIRouter()


def _model(dep: Any) -> dict[str, str]:
    return {"name": dep.name, "version": dep.version, "variant": dep.variant}


@router.post("/predict", tags=["predict"], summary="Predict one record")
async def predict(request: Request) -> Response:
    """Served by the PredictLane in front of the framework; this route documents it and is its fallback."""
    st = state(request)
    key = key_from_headers(request.headers.get("authorization"), request.headers.get("x-api-key"))
    answer, dep, principal = await predict_one(st, key, await read_json(request))
    request.scope.setdefault("state", {}).update(principal=principal, model_version=dep.version)
    return json_response(answer)


async def predict_one(st: AppState, key: str | None, body: Any) -> tuple[dict[str, Any], Deployment, str]:
    """One record through auth, validation, the model and the log: (answer, deployment, key name)."""
    principal = authorize_key(st.auth, key, "predict")
    if not isinstance(body, dict) or not isinstance(body.get("features"), dict):
        raise ApiError(422, "validation_error", 'expected {"features": {...}, "id": optional}', [
            {"record": 0, "feature": "features", "rule": "type", "message": "an object of feature values is required"}
        ])  # fmt: skip
    dep = st.manager.current
    if dep is None:
        raise ApiError(503, "not_ready", "no model is loaded yet")
    [result] = await st.service.run(dep, [body["features"]])
    raise_for_invalid([result])
    answer = result.body()
    answer.pop("index")
    answer["model"] = _model(dep)
    return answer, dep, principal.name


@router.post("/predict/batch", tags=["predict"], summary="Predict many records; per-record errors")
async def predict_batch(request: Request) -> Response:
    authorize(request, "predict")
    body = await read_json(request)
    records = body.get("records") if isinstance(body, dict) else body
    if not isinstance(records, list):
        raise ApiError(422, "validation_error", 'expected {"records": [{...}, ...]} or a JSON array of records')
    limit = state(request).settings.serve.max_batch
    if len(records) > limit:
        raise ApiError(413, "batch_too_large", f"{len(records)} records; the limit is {limit}")
    dep = deployment(request)
    unwrapped = [
        r.get("features", r) if isinstance(r, dict) and isinstance(r.get("features"), dict) else r for r in records
    ]
    results = await state(request).service.run(dep, unwrapped)
    return json_response(
        {
            "model": _model(dep),
            "predictions": [r.body() for r in results],
            "failed": sum(1 for r in results if not r.ok),
        }
    )


@router.post("/feedback", tags=["feedback"], summary="Ground truth for a prediction id")
async def feedback(request: Request) -> Response:
    authorize(request, "admin")
    body = await read_json(request)
    if not isinstance(body, dict) or not isinstance(body.get("prediction_id"), str):
        raise ApiError(422, "validation_error", 'expected {"prediction_id": "...", "label": ... or "value": ...}')
    label, value = body.get("label"), body.get("value")
    if (label is None) == (value is None):
        raise ApiError(422, "validation_error", "give exactly one of `label` (classification) or `value` (regression)")
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise ApiError(422, "validation_error", "`value` must be a number")
    st = state(request)
    if st.store is None:
        raise ApiError(503, "store_unavailable", "the prediction store is not configured")
    import anyio.to_thread

    if st.writer is not None:
        await anyio.to_thread.run_sync(st.writer.flush)
    found = await anyio.to_thread.run_sync(
        st.store.add_feedback,
        body["prediction_id"],
        None if label is None else str(label),
        None if value is None else float(value),
    )
    if not found:
        raise ApiError(404, "unknown_prediction", f"no prediction with id {body['prediction_id'][:64]!r}")
    return json_response({"prediction_id": body["prediction_id"], "recorded": True})
