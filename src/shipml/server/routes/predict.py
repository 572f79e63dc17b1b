"""shipml's own API: /predict, /predict/batch, /feedback."""

from __future__ import annotations

import functools
import time

import anyio
import anyio.to_thread
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from shipml.adapters.store import PredictionStore, StoreWriter
from shipml.core.ids import uuid7_seconds
from shipml.errors import StoreError
from shipml.server.auth import key_from_headers
from shipml.server.errors import ApiError, json_response
from shipml.server.http import authorize, read_json
from shipml.server.protocols.shipml import (
    FeedbackRequest,
    feedback_request,
    predict_one,
    routing_key,
)
from shipml.server.protocols.shipml import (
    predict_batch as predict_batch_answer,
)
from shipml.server.routes.common import state

router = APIRouter()
FEEDBACK_POLL_S = 0.02  # how often /feedback looks again for a recent prediction's row


@router.post("/predict", tags=["predict"], summary="Predict one record")
async def predict(request: Request) -> Response:
    """Served by the PredictLane in front of the framework; this route documents it and is its fallback."""
    st = state(request)
    key = key_from_headers(request.headers.get("authorization"), request.headers.get("x-api-key"))
    client = request.client.host if request.client else None
    header_key = routing_key(request.headers.get("x-routing-key"))
    answer, served, principal = await predict_one(st, key, client, await read_json(request), header_key)
    request.scope.setdefault("state", {}).update(principal=principal, model_version=served.version)
    return json_response(answer)


@router.post("/predict/batch", tags=["predict"], summary="Predict many records; per-record errors")
async def predict_batch(request: Request) -> Response:
    authorize(request, "predict")
    st = state(request)
    header_key = routing_key(request.headers.get("x-routing-key"))  # for the records without an id of their own
    body = await read_json(request)
    dep = st.deployment()
    request.scope.setdefault("state", {})["model_version"] = dep.primary.version
    answer = await predict_batch_answer(st.service, dep, body, st.settings.serve.max_batch, header_key)
    return Response(answer, media_type="application/json")


@router.post("/feedback", tags=["feedback"], summary="Ground truth for a prediction id")
async def feedback(request: Request) -> Response:
    authorize(request, "admin")
    fb = feedback_request(await read_json(request))
    st = state(request)
    if st.store is None:
        raise StoreError("the prediction store is not configured")
    timeout = st.settings.store.feedback_timeout_s
    with anyio.move_on_after(timeout) as scope:
        found = await _record(st.store, st.writer, st.settings.store.feedback_wait_s, fb)
    if scope.cancelled_caught:
        raise StoreError(f"the prediction store did not answer within store.feedback_timeout_s ({timeout:g} s)")
    if not found:
        raise ApiError(404, "unknown_prediction", f"no prediction with id {fb.prediction_id!r}")
    return json_response({"prediction_id": fb.prediction_id, "recorded": True})


async def _record(store: PredictionStore, writer: StoreWriter | None, patience: float, fb: FeedbackRequest) -> bool:
    """Record ``fb``; False when its prediction is unknown. A prediction made a moment ago by another worker may
    still sit in that worker's queue (async durability commits every store.async_window_ms): for an id made in the
    last ``patience`` seconds (and not in the future: another system's id, a typo), wait for its row first."""
    add = functools.partial(store.feedback.add, fb.prediction_id, fb.label, fb.value)
    if writer is not None:
        await anyio.to_thread.run_sync(writer.flush, abandon_on_cancel=True)
    found = await anyio.to_thread.run_sync(add, abandon_on_cancel=True)
    made_at = uuid7_seconds(fb.prediction_id)
    until = time.monotonic() + patience  # a wall clock stepping back cannot stretch the wait
    while not found and made_at is not None and 0.0 <= time.time() - made_at < patience and time.monotonic() < until:
        await anyio.sleep(FEEDBACK_POLL_S)
        found = await anyio.to_thread.run_sync(add, abandon_on_cancel=True)
    return found
