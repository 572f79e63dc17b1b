"""MLflow's scoring protocol: ``POST /invocations`` as ``mlflow models serve`` speaks it."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from shipml.core.prediction import Record
from shipml.server.errors import json_response
from shipml.server.http import authorize, read_json
from shipml.server.protocols.mlflow import decode_invocations, encode_predictions
from shipml.server.routes.common import raise_for_invalid, routed, state

router = APIRouter()


@router.post("/invocations", tags=["mlflow"], summary="MLflow scoring protocol")
async def invocations(request: Request) -> Response:
    # Errors here are answered in MLflow's shape too (`error_code`, `message`) by server/errors.py.
    authorize(request, "predict")
    st = state(request)
    decoded = decode_invocations(await read_json(request), st.settings.serve.max_batch)
    deployment = st.deployment()
    variant, key = routed(request, deployment)
    predictions = await st.service.run(deployment, [Record(r, key) for r in decoded], variant=variant)
    raise_for_invalid(predictions)
    body = encode_predictions(predictions, variant.bundle.schema.target.task == "regression")
    return json_response(body)  # X-Model-Version: the access log adds it from the request state
