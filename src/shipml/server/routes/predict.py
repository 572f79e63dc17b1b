"""shipml's own API: /predict, /predict/batch, /feedback."""

from __future__ import annotations

import time

import anyio
import anyio.to_thread
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from shipml.core.ids import uuid7_seconds
from shipml.errors import StoreError
from shipml.server.auth import key_from_headers
from shipml.server.errors import ApiError, json_response
from shipml.server.http import authorize, read_json
from shipml.server.protocols.shipml import batch_records_and_keys, feedback_request, model_of, predict_one, routing_key
from shipml.server.routes.common import state

router = APIRouter()


@router.post("/predict", tags=["predict"], summary="Predict one record")
async def predict(request: Request) -> Response:
    """Served by the PredictLane in front of the framework; this route documents it and is its fallback."""
    st = state(request)
    key = key_from_headers(request.headers.get("authorization"), request.headers.get("x-api-key"))
    client = request.client.host if request.client else None
    header_key = routing_key(request.headers.get("x-routing-key"))
    answer, dep, principal = await predict_one(st, key, client, await read_json(request), header_key)
    request.scope.setdefault("state", {}).update(principal=principal, model_version=dep.version)
    return json_response(answer)


@router.post("/predict/batch", tags=["predict"], summary="Predict many records; per-record errors")
async def predict_batch(request: Request) -> Response:
    authorize(request, "predict")
    st = state(request)
    records, keys = batch_records_and_keys(await read_json(request), st.settings.serve.max_batch)
    header_key = routing_key(request.headers.get("x-routing-key"))
    if header_key is not None:  # the header routes the records that have no id of their own
        keys = [k if k is not None else header_key for k in keys]
    dep = st.deployment()
    request.scope.setdefault("state", {})["model_version"] = dep.primary.version
    results = await st.service.run_routed(dep, records, keys)
    return json_response(
        {
            "model": model_of(dep.primary),
            "predictions": [r.body() for r in results],
            "failed": sum(1 for r in results if not r.ok),
        }
    )


@router.post("/feedback", tags=["feedback"], summary="Ground truth for a prediction id")
async def feedback(request: Request) -> Response:
    authorize(request, "admin")
    fb = feedback_request(await read_json(request))
    st = state(request)
    if st.store is None:
        raise StoreError("the prediction store is not configured")
    if st.writer is not None:
        await anyio.to_thread.run_sync(st.writer.flush)
    found = await anyio.to_thread.run_sync(st.store.feedback.add, fb.prediction_id, fb.label, fb.value)
    # A prediction made a moment ago by another worker may still sit in that worker's queue (async
    # durability commits every store.async_window_ms): wait for it, for recent ids only, before a 404.
    made_at = uuid7_seconds(fb.prediction_id)
    patience = st.settings.store.feedback_wait_s
    while not found and made_at is not None and time.time() - made_at < patience:
        await anyio.sleep(0.02)
        found = await anyio.to_thread.run_sync(st.store.feedback.add, fb.prediction_id, fb.label, fb.value)
    if not found:
        raise ApiError(404, "unknown_prediction", f"no prediction with id {fb.prediction_id!r}")
    return json_response({"prediction_id": fb.prediction_id, "recorded": True})
