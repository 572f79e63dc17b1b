"""OpenAPI that describes the loaded model's real features (types, enums, ranges), for clients and fuzzers."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from shipml.core.schema import Feature, FeatureSchema
from shipml.server.protocols.mlflow import FORMATS
from shipml.server.protocols.oip_v2 import DATATYPES, ModelSignature
from shipml.server.protocols.shipml import MAX_LABEL_CHARS


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


def mlflow_request_schema(schema: FeatureSchema | None) -> dict[str, Any]:
    """``/invocations``: exactly one of MLflow's four formats (``inputs``/``instances`` also as columns)."""
    names: dict[str, Any] = {"type": "string"}
    columns: dict[str, Any] = {"type": "object", "additionalProperties": {"type": "array"}}
    if schema is not None:
        names["enum"] = list(schema.names)
        columns = {
            "type": "object",
            "properties": {f.name: {"type": "array", "items": feature_json_schema(f)} for f in schema.features},
            "required": [f.name for f in schema.features if not f.nullable],
            "additionalProperties": False,
        }
    records = {"type": "array", "items": {"$ref": "#/components/schemas/Features"}}
    split = {
        "type": "object",
        "properties": {
            "columns": {"type": "array", "items": names},
            "data": {"type": "array", "items": {"type": "array"}},
            "index": {"type": "array"},
        },
        "required": ["columns", "data"],
    }
    shapes = {"dataframe_split": split, "dataframe_records": records, "instances": {"anyOf": [records, columns]}}
    shapes["inputs"] = {"anyOf": [records, columns]}
    return {
        "description": "one of " + ", ".join(FORMATS),
        "oneOf": [{"type": "object", "properties": {key: shapes[key]}, "required": [key]} for key in FORMATS],
    }


def feedback_request_schema() -> dict[str, Any]:
    """``/feedback``: a prediction id and exactly one of ``label`` (classification) or ``value`` (regression)."""
    return {
        "type": "object",
        "properties": {
            "prediction_id": {"type": "string", "minLength": 1, "maxLength": 64},
            "label": {
                "anyOf": [{"type": "string", "maxLength": MAX_LABEL_CHARS}, {"type": "number"}, {"type": "boolean"}]
            },
            "value": {"type": "number"},
        },
        "required": ["prediction_id"],
        "oneOf": [{"required": ["label"]}, {"required": ["value"]}],
    }


def v2_infer_request_schema(signature: ModelSignature | None) -> dict[str, Any]:
    """``/v2/models/{name}/infer``: one tensor per feature, as JSON ``data`` or binary (``binary_data_size``)."""
    input_names: dict[str, Any] = {"type": "string"}
    output_names: dict[str, Any] = {"type": "string"}
    if signature is not None:
        input_names["enum"] = [t.name for t in signature.inputs]
        output_names["enum"] = [t.name for t in signature.outputs]
    tensor = {
        "type": "object",
        "properties": {
            "name": input_names,
            "datatype": {"type": "string", "enum": list(DATATYPES)},
            "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1, "maxItems": 2},
            "data": {"type": "array"},
            "parameters": {"type": "object", "properties": {"binary_data_size": {"type": "integer", "minimum": 0}}},
        },
        "required": ["name", "datatype", "shape"],
        "description": "JSON `data`, or parameters.binary_data_size with the bytes after the JSON header "
        "(Inference-Header-Content-Length)",
    }
    output = {
        "type": "object",
        "properties": {
            "name": output_names,
            "parameters": {"type": "object", "properties": {"binary_data": {"type": "boolean"}}},
        },
        "required": ["name"],
    }
    return {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "parameters": {"type": "object", "properties": {"binary_data_output": {"type": "boolean"}}},
            "inputs": {"type": "array", "items": tensor, "minItems": 1},
            "outputs": {"type": "array", "items": output},
        },
        "required": ["inputs"],
    }


def _body(ref: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": {"$ref": ref}}}}


def _error_response(ref: str) -> dict[str, Any]:
    return {
        "description": "error",
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
    }


def model_openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document with request bodies taken from the current deployment's FeatureSchema."""
    spec = get_openapi(title=app.title, version=app.version, routes=app.routes)
    state = getattr(app.state, "shipml", None)
    current = state.manager.current.primary if state is not None and state.manager.current else None
    schema = current.bundle.schema if current else None
    features: dict[str, Any] = features_schema(schema) if schema else {"type": "object"}
    signature = (
        ModelSignature.of(current.name, current.version, current.bundle.schema, current.bundle.classes)
        if current
        else None
    )
    components = spec.setdefault("components", {}).setdefault("schemas", {})
    components["Features"] = features
    components["MlflowRequest"] = mlflow_request_schema(schema)
    components["FeedbackRequest"] = feedback_request_schema()
    components["V2InferenceRequest"] = v2_infer_request_schema(signature)
    components["V2Error"] = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
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
    bodies = (
        ("/predict", "PredictRequest", "Error"),
        ("/predict/batch", "BatchRequest", "Error"),
        ("/invocations", "MlflowRequest", "Error"),
        ("/feedback", "FeedbackRequest", "Error"),
        ("/v2/models/{name}/infer", "V2InferenceRequest", "V2Error"),
        ("/v2/models/{name}/versions/{version}/infer", "V2InferenceRequest", "V2Error"),
    )
    for path, ref, error in bodies:
        if path in paths:
            op = paths[path]["post"]
            op["requestBody"] = _body(f"#/components/schemas/{ref}")
            for status in ("400", "401", "403", "404", "413", "422", "503"):
                op.setdefault("responses", {})[status] = _error_response(error)
    spec.setdefault("components", {})["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    return spec
