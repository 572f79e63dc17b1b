"""Operations: health, readiness, metrics, model description, reload."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from shipml.server.errors import json_response
from shipml.server.http import authorize
from shipml.server.model_manager import Variant
from shipml.server.routes.common import state

router = APIRouter()


@router.get("/health/live", tags=["health"])
async def live() -> Response:
    return json_response({"status": "live"})


@router.get("/health/ready", tags=["health"])
async def ready(request: Request) -> Response:
    st = state(request)
    current = st.manager.current
    if current is None:
        return json_response({"status": "not_ready", "reason": "no model loaded"}, 503)
    if not st.ready:
        return json_response({"status": "not_ready", "reason": "shutting down"}, 503)
    return json_response({"status": "ready", "model": current.primary.name, "version": current.primary.version})


@router.get("/metrics", tags=["health"], summary="Prometheus metrics")
async def metrics(request: Request) -> Response:
    return Response(state(request).metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


@router.get("/model", tags=["model"], summary="The model being served")
async def model(request: Request) -> Response:
    authorize(request, "predict")
    st = state(request)
    manager = st.manager
    current = st.deployment()
    request.scope.setdefault("state", {})["model_version"] = current.primary.version
    body = describe(current.primary)
    if current.split is not None or current.shadows:
        body["variants"] = [describe(v) | {"weight": w} for v, w in zip(current.variants, current.weights, strict=True)]
        body["shadows"] = [describe(v) | {"fraction": sh.fraction} for v, sh in current.shadows]
    body["registry"] = {
        "reference": str(manager.ref),
        "desired_version": manager.desired_version,
        "serving_version": body["version"],
        "last_check": manager.last_check,
        "last_error": manager.last_error,
        "last_failure": manager.last_failure,
    }
    return json_response(body)


@router.post("/admin/reload", tags=["admin"], summary="Load the version the registry alias points at now")
async def reload(request: Request) -> Response:
    authorize(request, "admin")
    result = await state(request).manager.reload(force=request.query_params.get("force") == "true")
    body: dict[str, object] = {"changed": result.changed, "version": result.version, "previous": result.previous}
    if result.error is not None:
        body["error"] = {
            "code": "load_failed",
            "message": f"the new version failed to load, the old one keeps serving: {result.error[:300]}",
        }
        return json_response(body, 502)
    return json_response(body)


def describe(deployment: Variant) -> dict[str, Any]:
    """The `GET /model` document."""
    b = deployment.bundle
    return {
        "name": b.info.name,
        "version": b.info.version,
        "variant": deployment.variant,
        "role": deployment.role,
        "run_id": b.info.run_id,
        "trained_at": b.info.created_at.isoformat(),
        "aliases": list(b.info.aliases),
        "task": b.schema.target.task,
        "classes": [str(c) for c in b.classes],
        "metrics": {k: v for k, v in b.info.metrics.items() if not k.startswith("cv_")},
        "fast_path": b.fast_path.tag() if b.fast_path else b.info.tags.get("shipml.fast_path", ""),
        "predictor_reason": b.predictor_reason,
        "predictor": b.predictor.name,
        "micro_batching": deployment.batcher is not None,
        "backend": getattr(b.predictor, "backend", None),
        "schema": b.schema.to_dict(),
    }
