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
from shipml.server.protocols.shipml import batch_records, feedback_request, model_of, predict_one
from shipml.server.routes.common import deployment, state

router = APIRouter()


@router.post("/predict", tags=["predict"], summary="Predict one record")
async def predict(request: Request) -> Response:
    """Served by the PredictLane in front of the framework; this route documents it and is its fallback."""
    st = state(request)
    key = key_from_headers(request.headers.get("authorization"), request.headers.get("x-api-key"))
    client = request.client.host if request.client else None
    answer, dep, principal = await predict_one(st, key, client, await read_json(request))
    request.scope.setdefault("state", {}).update(principal=principal, model_version=dep.version)
    return json_response(answer)


@router.post("/predict/batch", tags=["predict"], summary="Predict many records; per-record errors")
async def predict_batch(request: Request) -> Response:
    authorize(request, "predict")
    records = batch_records(await read_json(request), state(request).settings.serve.max_batch)
    dep = deployment(request)
    results = await state(request).service.run(dep, records)
    return json_response(
        {
            "model": model_of(dep),
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
    found = await anyio.to_thread.run_sync(st.store.add_feedback, fb.prediction_id, fb.label, fb.value)
    # A prediction made a moment ago by another worker may still sit in that worker's queue (async
    # durability commits every store.async_window_ms): wait for it, for recent ids only, before a 404.
    made_at = uuid7_seconds(fb.prediction_id)
    patience = st.settings.store.feedback_wait_s
    while not found and made_at is not None and time.time() - made_at < patience:
        await anyio.sleep(0.02)
        found = await anyio.to_thread.run_sync(st.store.add_feedback, fb.prediction_id, fb.label, fb.value)
    if not found:
        raise ApiError(404, "unknown_prediction", f"no prediction with id {fb.prediction_id!r}")
    return json_response({"prediction_id": fb.prediction_id, "recorded": True})
