"""MLflow's scoring protocol: ``POST /invocations`` as ``mlflow models serve`` speaks it."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from shipml.server.errors import json_response
from shipml.server.http import authorize, read_json
from shipml.server.protocols.mlflow import decode_invocations, encode_predictions
from shipml.server.routes.common import deployment, raise_for_invalid, state

router = APIRouter()


@router.post("/invocations", tags=["mlflow"], summary="MLflow scoring protocol")
async def invocations(request: Request) -> Response:
    # Errors here are answered in MLflow's shape too (`error_code`, `message`) by server/errors.py.
    authorize(request, "predict")
    st = state(request)
    records = decode_invocations(await read_json(request), st.settings.serve.max_batch)
    dep = deployment(request)
    results = await st.service.run(dep, records)
    raise_for_invalid(results)
    body = encode_predictions(results, dep.bundle.schema.target.task == "regression")
    return json_response(body, headers={"X-Model-Version": dep.version})
