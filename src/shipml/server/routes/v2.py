"""The Open Inference Protocol v2 (REST): server and model metadata, health, infer (JSON or binary tensors).

Decoding and encoding live in ``server/protocols/oip_v2.py``; errors under
``/v2`` are answered as ``{"error": "<message>"}`` by ``server/errors.py``.
"""

from __future__ import annotations

import weakref
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from shipml.server.errors import ApiError, json_response
from shipml.server.http import authorize, parse_json, read_body
from shipml.server.model_manager import Variant
from shipml.server.protocols.oip_v2 import (
    HEADER_LENGTH,
    ModelSignature,
    decode_infer,
    encode_infer,
    invalid_records_error,
    server_metadata,
    split_body,
)
from shipml.server.routes.common import deployment, state

router = APIRouter(prefix="/v2", tags=["open-inference-v2"])


@router.get("", summary="Server metadata")
async def server(request: Request) -> Response:
    try:
        version = package_version("shipml")
    except PackageNotFoundError:  # running from a source tree that was never installed
        version = "unknown"
    return json_response(server_metadata(version))


@router.get("/health/live")
async def live() -> Response:
    return json_response({"live": True})


@router.get("/health/ready")
async def ready(request: Request) -> Response:
    ok = state(request).ready
    return json_response({"ready": ok}, 200 if ok else 503)


def _model_of(request: Request, name: str, version: str | None = None) -> Variant:
    """The deployment serving ``name`` (and ``version``, when the path names one); 404 for any other."""
    manager = state(request).manager
    if manager.current is None and name == manager.ref.name:
        raise ApiError(503, "not_ready", f"model {name[:64]!r} is loading")
    dep = deployment(request)
    if name != dep.name:
        raise ApiError(404, "unknown_model", f"this server serves {dep.name!r}, not {name[:64]!r}")
    if version is not None and version != dep.version:
        raise ApiError(
            404, "unknown_version", f"model {dep.name!r} is served at version {dep.version}, not {version[:32]!r}"
        )
    return dep


# Readiness per the protocol: 200 when ready; 404 for a model this server does not serve; 503 while it loads.
@router.get("/models/{name}/ready", summary="Model readiness")
async def model_ready(request: Request, name: str) -> Response:
    _model_of(request, name)
    return json_response({"name": name, "ready": True})


@router.get("/models/{name}/versions/{version}/ready", summary="Model version readiness")
async def model_version_ready(request: Request, name: str, version: str) -> Response:
    _model_of(request, name, version)
    return json_response({"name": name, "ready": True})


@router.get("/models/{name}", summary="Model metadata")
async def metadata(request: Request, name: str) -> Response:
    authorize(request, "predict")
    return json_response(_signature(request, _model_of(request, name)).metadata())


@router.get("/models/{name}/versions/{version}", summary="Model version metadata")
async def version_metadata(request: Request, name: str, version: str) -> Response:
    authorize(request, "predict")
    return json_response(_signature(request, _model_of(request, name, version)).metadata())


@router.post("/models/{name}/infer", summary="Inference (JSON or binary tensor data)")
async def infer(request: Request, name: str) -> Response:
    return await _infer(request, name, None)


@router.post("/models/{name}/versions/{version}/infer", summary="Inference on a model version")
async def version_infer(request: Request, name: str, version: str) -> Response:
    return await _infer(request, name, version)


def _signature(request: Request, dep: Variant) -> ModelSignature:
    """The deployment's signature, built once per deployment and kept on the app (weakly: a reload frees
    the old deployment)."""
    cached: tuple[weakref.ref[Variant], ModelSignature] | None = getattr(request.app.state, "oip_v2", None)
    if cached is not None and cached[0]() is dep:
        return cached[1]
    signature = ModelSignature.of(dep.name, dep.version, dep.bundle.schema, dep.bundle.classes)
    request.app.state.oip_v2 = (weakref.ref(dep), signature)
    return signature


async def _infer(request: Request, name: str, version: str | None) -> Response:
    authorize(request, "predict")
    st = state(request)
    header, blobs = split_body(await read_body(request), request.headers.get(HEADER_LENGTH))
    body = parse_json(header)
    dep = _model_of(request, name, version)
    signature = _signature(request, dep)
    decoded = decode_infer(body, blobs, signature, st.settings.serve.max_batch)
    results = await st.service.run(dep, decoded.records())
    refused = invalid_records_error(results)
    if refused is not None:
        raise refused
    encoded = encode_infer(signature, decoded, results)
    if encoded.header_length is None:
        return Response(encoded.body, media_type="application/json")
    return Response(
        encoded.body,
        media_type="application/octet-stream",
        headers={HEADER_LENGTH: str(encoded.header_length)},
    )
