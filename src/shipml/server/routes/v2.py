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

from shipml.core.prediction import Record
from shipml.server.errors import ApiError, json_response
from shipml.server.http import authorize, parse_json, read_body
from shipml.server.model_manager import Deployment, Variant
from shipml.server.protocols.oip_v2 import (
    HEADER_LENGTH,
    ModelSignature,
    decode_infer,
    encode_infer,
    invalid_records_error,
    server_metadata,
    split_body,
)
from shipml.server.routes.common import routed, state

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


def _model_of(request: Request, name: str, version: str | None = None) -> tuple[Deployment, Variant | None]:
    """The deployment serving ``name``, and the variant serving ``version`` when the path names one (whichever
    variant of an experiment or a canary serves it: never a random draw); 404 for any other name or version,
    503 while the model loads."""
    st = state(request)
    if st.manager.current is None and name == st.manager.ref.name:
        raise ApiError(503, "not_ready", f"model {name[:64]!r} is loading")
    dep = st.deployment()
    if name != dep.primary.name:
        raise ApiError(404, "unknown_model", f"this server serves {dep.primary.name!r}, not {name[:64]!r}")
    if version is None:
        return dep, None
    for variant in dep.variants:
        if variant.version == version:
            return dep, variant
    served = ", ".join(sorted({v.version for v in dep.variants}))
    raise ApiError(404, "unknown_version", f"model {name!r} is served at version {served}, not {version[:32]!r}")


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
    """The champion's signature (the first variant's: the same answer on every call during an experiment)."""
    authorize(request, "predict")
    dep, _ = _model_of(request, name)
    return json_response(_signature(request, dep.primary).metadata())


@router.get("/models/{name}/versions/{version}", summary="Model version metadata")
async def version_metadata(request: Request, name: str, version: str) -> Response:
    authorize(request, "predict")
    _, variant = _model_of(request, name, version)
    assert variant is not None  # noqa: S101 - a path with a version gives its variant or a 404
    return json_response(_signature(request, variant).metadata())


@router.post("/models/{name}/infer", summary="Inference (JSON or binary tensor data)")
async def infer(request: Request, name: str) -> Response:
    return await _infer(request, name, None)


@router.post("/models/{name}/versions/{version}/infer", summary="Inference on a model version")
async def version_infer(request: Request, name: str, version: str) -> Response:
    return await _infer(request, name, version)


def _signature(request: Request, variant: Variant) -> ModelSignature:
    """The variant's signature, built once per loaded variant and kept on the app (weakly: a reload frees the
    old variant, and its entry goes with the next new one)."""
    cache: dict[int, tuple[weakref.ref[Variant], ModelSignature]] | None = getattr(request.app.state, "oip_v2", None)
    if cache is None:
        cache = request.app.state.oip_v2 = {}
    found = cache.get(id(variant))
    if found is not None and found[0]() is variant:
        return found[1]
    for stale in [k for k, (ref, _) in cache.items() if ref() is None]:
        del cache[stale]
    signature = ModelSignature.of(variant.name, variant.version, variant.bundle.schema, variant.bundle.classes)
    cache[id(variant)] = (weakref.ref(variant), signature)
    return signature


async def _infer(request: Request, name: str, version: str | None) -> Response:
    authorize(request, "predict")
    st = state(request)
    header, blobs = split_body(await read_body(request), request.headers.get(HEADER_LENGTH))
    body = parse_json(header)
    dep, pinned = _model_of(request, name, version)
    variant, key = routed(request, dep, pinned)  # routed first: each variant decodes against its own inputs
    signature = _signature(request, variant)
    decoded = decode_infer(body, blobs, signature, st.settings.serve.max_batch)
    predictions = await st.service.run(dep, [Record(r, key) for r in decoded.records()], variant=variant)
    refused = invalid_records_error(predictions)
    if refused is not None:
        raise refused
    encoded = encode_infer(signature, decoded, predictions)
    if encoded.header_length is None:
        return Response(encoded.body, media_type="application/json")
    return Response(
        encoded.body,
        media_type="application/octet-stream",
        headers={HEADER_LENGTH: str(encoded.header_length)},
    )
