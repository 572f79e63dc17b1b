"""The JSON Schemas of the service's bodies, requests and answers, for ``/openapi.json`` (server/openapi.py).

Request bodies are described from the loaded model (its features' types, categories and ranges, its tensor
names); answers as they are built by the protocols' encoders. Objects allow properties beyond those named,
so a client reads what it knows, except a record of features, which the validator checks name by name.
"""

from __future__ import annotations

import math
from typing import Any

from shipml.core.schema import Feature, FeatureSchema
from shipml.server.protocols.mlflow import FORMATS
from shipml.server.protocols.oip_v2 import DATATYPES, ModelSignature
from shipml.server.protocols.shipml import MAX_LABEL_CHARS

JsonSchema = dict[str, Any]

_STRING: JsonSchema = {"type": "string"}
_LABEL: JsonSchema = {"type": ["string", "integer", "number", "boolean"], "description": "a class of the target"}
_ROUTING_KEY: JsonSchema = {
    "type": ["string", "integer"],
    "description": "routing key of the record (1 to 256 characters; anything else routes at random)",
}


def ref(name: str) -> JsonSchema:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(properties: dict[str, JsonSchema], required: tuple[str, ...] = ()) -> JsonSchema:
    out: JsonSchema = {"type": "object", "properties": properties}
    if required:
        out["required"] = list(required)
    return out


def feature_json_schema(f: Feature) -> JsonSchema:
    if f.kind == "categorical":
        out: JsonSchema = {"type": "string"}
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


def features_schema(schema: FeatureSchema | None) -> JsonSchema:
    if schema is None:
        return {"type": "object"}
    return {
        "type": "object",
        "properties": {f.name: feature_json_schema(f) for f in schema.features},
        "required": [f.name for f in schema.features if not f.nullable],
        "additionalProperties": False,
    }


def example_value(f: Feature) -> float | int | str | bool:
    """A value ``f`` accepts: its first category, false, or the lower end of its range (0 when it has none)."""
    if f.kind == "categorical":
        return f.categories[0] if f.categories else "a"
    if f.kind == "boolean":
        return False
    low = f.min if f.min is not None else min(0.0, f.max) if f.max is not None else 0.0
    return math.ceil(low) if f.kind == "integer" else low


def examples(schema: FeatureSchema | None, signature: ModelSignature | None) -> dict[str, JsonSchema]:
    """A request each body accepts, for the loaded model: what the document shows, and where a fuzzer starts."""
    if schema is None or signature is None:
        return {}
    record = {f.name: example_value(f) for f in schema.features}
    return {
        "PredictRequest": {"features": record, "id": "customer-42"},
        "BatchRequest": {"records": [record, {"features": record, "id": "customer-42"}]},
        "MlflowRequest": {"dataframe_split": {"columns": list(record), "data": [list(record.values())]}},
        "V2InferenceRequest": {
            "inputs": [
                {"name": t.name, "datatype": t.datatype, "shape": [1], "data": [record[t.name]]}
                for t in signature.inputs
            ]
        },
    }


def predict_request_schema() -> JsonSchema:
    return _object({"features": ref("Features"), "id": _ROUTING_KEY}, ("features",))


def batch_request_schema(max_batch: int) -> JsonSchema:
    """``/predict/batch``: ``{"records": [...]}`` or the array itself; a record is its features, or
    ``{"features", "id"}`` to give it a routing key. A record that fails validation is answered in place."""
    records = {"type": "array", "items": {"anyOf": [ref("Features"), ref("PredictRequest")]}, "maxItems": max_batch}
    return {"anyOf": [_object({"records": records}, ("records",)), records]}


def mlflow_request_schema(schema: FeatureSchema | None) -> JsonSchema:
    """``/invocations``: exactly one of MLflow's four formats (``inputs``/``instances`` also as columns)."""
    names: JsonSchema = {"type": "string"}
    columns: JsonSchema = {"type": "object", "additionalProperties": {"type": "array"}}
    if schema is not None:
        names["enum"] = list(schema.names)
        columns = {
            "type": "object",
            "properties": {f.name: {"type": "array", "items": feature_json_schema(f)} for f in schema.features},
            "required": [f.name for f in schema.features if not f.nullable],
            "additionalProperties": False,
        }
    records = {"type": "array", "items": ref("Features")}
    split = _object(
        {
            "columns": {"type": "array", "items": names},
            "data": {"type": "array", "items": {"type": "array"}},
            "index": {"type": "array"},
        },
        ("columns", "data"),
    )
    shapes = {"dataframe_split": split, "dataframe_records": records, "instances": {"anyOf": [records, columns]}}
    shapes["inputs"] = {"anyOf": [records, columns]}
    return {
        "description": "one of " + ", ".join(FORMATS),
        "oneOf": [_object({key: shapes[key]}, (key,)) for key in FORMATS],
    }


def feedback_request_schema() -> JsonSchema:
    """``/feedback``: a prediction id and exactly one of ``label`` (classification) or ``value`` (regression)."""
    return {
        **_object(
            {
                "prediction_id": {"type": "string", "minLength": 1, "maxLength": 64},
                "label": {"anyOf": [{"type": "string", "maxLength": MAX_LABEL_CHARS}, {"type": ["number", "boolean"]}]},
                "value": {"type": "number"},
            },
            ("prediction_id",),
        ),
        "oneOf": [{"required": ["label"]}, {"required": ["value"]}],
    }


def v2_infer_request_schema(signature: ModelSignature | None) -> JsonSchema:
    """``/v2/models/{name}/infer``: one tensor per feature, as JSON ``data`` or binary (``binary_data_size``)."""
    input_names: JsonSchema = {"type": "string"}
    output_names: JsonSchema = {"type": "string"}
    if signature is not None:
        input_names["enum"] = [t.name for t in signature.inputs]
        output_names["enum"] = [t.name for t in signature.outputs]
    tensor = {
        **_object(
            {
                "name": input_names,
                "datatype": {"type": "string", "enum": list(DATATYPES)},
                "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1, "maxItems": 2},
                "data": {"type": "array"},
                "parameters": _object({"binary_data_size": {"type": "integer", "minimum": 0}}),
            },
            ("name", "datatype", "shape"),
        ),
        "description": "JSON `data`, or parameters.binary_data_size with the bytes after the JSON header "
        "(Inference-Header-Content-Length)",
    }
    output = _object({"name": output_names, "parameters": _object({"binary_data": {"type": "boolean"}})}, ("name",))
    return _object(
        {
            "id": _STRING,
            "parameters": _object({"binary_data_output": {"type": "boolean"}}),
            "inputs": {"type": "array", "items": tensor, "minItems": 1},
            "outputs": {"type": "array", "items": output},
        },
        ("inputs",),
    )


# --- answers ------------------------------------------------------------------------------------------


def _prediction(regression: bool, classes: list[str]) -> tuple[dict[str, JsonSchema], tuple[str, ...]]:
    """The properties of one answered record, and those always present, for the model's task."""
    if regression:
        return {"prediction_id": _STRING, "value": {"type": "number"}}, ("prediction_id", "value")
    probabilities: JsonSchema = {"type": "object", "additionalProperties": {"type": "number"}}
    if classes:
        probabilities |= {"properties": {c: {"type": "number"} for c in classes}, "required": classes}
    return (
        {"prediction_id": _STRING, "predicted_class": _LABEL, "probabilities": probabilities},
        ("prediction_id", "predicted_class", "probabilities"),
    )


def answer_schemas(regression: bool | None, classes: list[str]) -> dict[str, JsonSchema]:
    """The components of the answers: predictions, feedback, metadata, health and errors."""
    detail = _object(
        {"record": {"type": "integer"}, "feature": _STRING, "rule": _STRING, "message": _STRING},
        ("record", "feature", "rule", "message"),
    )
    error = _object(
        {"code": _STRING, "message": _STRING, "details": {"type": "array", "items": ref("ErrorDetail")}},
        ("code", "message"),
    )
    props, required = _prediction(bool(regression), classes)
    if regression is None:  # no model loaded: either task
        props, required = {**props, "value": {"type": "number"}}, ("prediction_id",)
    model = _object({"name": _STRING, "version": _STRING, "variant": _STRING}, ("name", "version", "variant"))
    failed = _object(
        {
            "index": {"type": "integer", "minimum": 0},
            "error": _object({"code": _STRING, "details": {"type": "array", "items": ref("ErrorDetail")}}, ("code",)),
        },
        ("index", "error"),
    )
    tensor = _object(
        {
            "name": _STRING,
            "datatype": {"type": "string", "enum": list(DATATYPES)},
            "shape": {"type": "array", "items": {"type": "integer"}},
            "data": {"type": "array"},
            "parameters": _object({"binary_data_size": {"type": "integer", "minimum": 0}}),
        },
        ("name", "datatype", "shape"),
    )
    tensor_metadata = _object(
        {"name": _STRING, "datatype": _STRING, "shape": {"type": "array", "items": {"type": "integer"}}},
        ("name", "datatype", "shape"),
    )
    return {
        "ErrorDetail": detail,
        "Error": _object({"error": error}, ("error",)),
        "MlflowError": _object(
            {
                "error": error,
                "error_code": {"type": "string", "enum": ["BAD_REQUEST", "SERVICE_UNAVAILABLE"]},
                "message": _STRING,
            },
            ("error", "error_code", "message"),
        ),
        "V2Error": _object({"error": _STRING}, ("error",)),
        "ModelRef": model,
        "PredictResponse": _object({**props, "model": ref("ModelRef")}, (*required, "model")),
        "BatchResponse": _object(
            {
                "model": ref("ModelRef"),
                "predictions": {
                    "type": "array",
                    "items": {
                        "anyOf": [
                            _object({"index": {"type": "integer", "minimum": 0}, **props}, ("index", *required)),
                            failed,
                        ]
                    },
                },
                "failed": {"type": "integer", "minimum": 0},
            },
            ("model", "predictions", "failed"),
        ),
        "MlflowResponse": _object(
            {"predictions": {"type": "array", "items": {"type": "number"} if regression else _LABEL}}, ("predictions",)
        ),
        "FeedbackResponse": _object(
            {"prediction_id": _STRING, "recorded": {"const": True}}, ("prediction_id", "recorded")
        ),
        "V2ServerMetadata": _object(
            {"name": _STRING, "version": _STRING, "extensions": {"type": "array", "items": _STRING}},
            ("name", "version", "extensions"),
        ),
        "V2Live": _object({"live": {"type": "boolean"}}, ("live",)),
        "V2Ready": _object({"ready": {"type": "boolean"}}, ("ready",)),
        "V2ModelReady": _object({"name": _STRING, "ready": {"type": "boolean"}}, ("name", "ready")),
        "V2ModelMetadata": _object(
            {
                "name": _STRING,
                "versions": {"type": "array", "items": _STRING},
                "platform": _STRING,
                "inputs": {"type": "array", "items": tensor_metadata},
                "outputs": {"type": "array", "items": tensor_metadata},
                "parameters": {"type": "object"},
            },
            ("name", "versions", "platform", "inputs", "outputs"),
        ),
        "V2InferenceResponse": _object(
            {
                "model_name": _STRING,
                "model_version": _STRING,
                "id": _STRING,
                "outputs": {"type": "array", "items": tensor},
            },
            ("model_name", "model_version", "outputs"),
        ),
        "Live": _object({"status": {"const": "live"}}, ("status",)),
        "Ready": _object(
            {
                "status": {"type": "string", "enum": ["ready", "not_ready"]},
                "model": _STRING,
                "version": _STRING,
                "reason": _STRING,
            },
            ("status",),
        ),
        "Model": _object(
            {
                "name": _STRING,
                "version": _STRING,
                "variant": _STRING,
                "role": _STRING,
                "task": _STRING,
                "classes": {"type": "array", "items": _STRING},
                "schema": {"type": "object"},
                "registry": {"type": "object"},
                "variants": {"type": "array", "items": {"type": "object"}},
                "shadows": {"type": "array", "items": {"type": "object"}},
            },
            ("name", "version", "variant", "task", "schema", "registry"),
        ),
        "Reload": _object(
            {
                "changed": {"type": "boolean"},
                "version": {"type": ["string", "null"]},
                "previous": {"type": ["string", "null"]},
                "error": _object({"code": _STRING, "message": _STRING}, ("code", "message")),
            },
            ("changed", "version", "previous"),
        ),
    }
