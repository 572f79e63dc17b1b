"""OpenAPI that describes the loaded model's real features (types, enums, ranges), for clients and fuzzers."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from shipml.core.schema import Feature, FeatureSchema


def feature_json_schema(f: Feature) -> dict[str, Any]:
    if f.kind == "categorical":
        out: dict[str, Any] = {"type": "string"}
        if f.categories is not None:
            out["enum"] = list(f.categories)
    elif f.kind == "boolean":
        out = {"type": "boolean"}
    else:
        out = {"type": "integer" if f.kind == "integer" else "number"}
        if f.min is not None:
            out["minimum"] = f.min
        if f.max is not None:
            out["maximum"] = f.max
    if f.nullable:
        out = {"anyOf": [out, {"type": "null"}]}
    return out


def features_schema(schema: FeatureSchema) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {f.name: feature_json_schema(f) for f in schema.features},
        "required": [f.name for f in schema.features if not f.nullable],
        "additionalProperties": False,
    }


def _body(ref: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": {"$ref": ref}}}}


def model_openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document with request bodies taken from the current deployment's FeatureSchema."""
    spec = get_openapi(title=app.title, version=app.version, routes=app.routes)
    state = getattr(app.state, "shipml", None)
    current = state.manager.current if state is not None else None
    features: dict[str, Any] = features_schema(current.bundle.schema) if current else {"type": "object"}
    components = spec.setdefault("components", {}).setdefault("schemas", {})
    components["Features"] = features
    components["PredictRequest"] = {
        "type": "object",
        "properties": {"features": {"$ref": "#/components/schemas/Features"}, "id": {"type": "string"}},
        "required": ["features"],
    }
    components["BatchRequest"] = {
        "type": "object",
        "properties": {"records": {"type": "array", "items": {"$ref": "#/components/schemas/Features"}}},
        "required": ["records"],
    }
    components["Error"] = {
        "type": "object",
        "properties": {
            "error": {
                "type": "object",
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "details": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "record": {"type": "integer"},
                                "feature": {"type": "string"},
                                "rule": {"type": "string"},
                                "message": {"type": "string"},
                            },
                        },
                    },
                },
                "required": ["code", "message"],
            }
        },
    }
    paths = spec.get("paths", {})
    for path, ref in (("/predict", "PredictRequest"), ("/predict/batch", "BatchRequest")):
        if path in paths:
            op = paths[path]["post"]
            op["requestBody"] = _body(f"#/components/schemas/{ref}")
            for status in ("401", "403", "413", "422", "503"):
                op.setdefault("responses", {})[status] = {
                    "description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                }  # fmt: skip
    spec.setdefault("components", {})["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    return spec
