"""``/openapi.json``: every operation with the request body, parameters, security and answers it really has.

The request bodies describe the loaded model's features (types, categories, ranges) and tensors; the
answers list every status an operation can give, each with its body's schema in the shape of its
protocol (shipml's, MLflow's or the Open Inference Protocol's errors). A fuzzer checks the service
against this document (tests/integration/test_openapi_fuzz.py), so it is kept true, not aspirational.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from shipml.server.admission import ALWAYS_ADMITTED
from shipml.server.errors import protocol_of
from shipml.server.openapi_schemas import (
    JsonSchema,
    answer_schemas,
    batch_request_schema,
    examples,
    features_schema,
    feedback_request_schema,
    mlflow_request_schema,
    predict_request_schema,
    ref,
    v2_infer_request_schema,
)
from shipml.server.protocols.oip_v2 import HEADER_LENGTH, ModelSignature

_ERROR_OF = {"shipml": "Error", "mlflow": "MlflowError", "v2": "V2Error"}
# Statuses by cause, each with what the client is told.
_ANYWHERE = {400: "a malformed request (or a Host this service does not answer for)"}
_ADMITTED = {503: "at capacity (retry after the Retry-After seconds), or no model loaded yet"}
_AUTH = {
    401: "no valid API key (Authorization: Bearer <key> or X-API-Key)",
    403: "the key lacks the role",
    429: "the key is over its rate limit, or this client failed authentication too often",
}
_BODY = {
    400: "the body is not JSON, or not the protocol's shape",
    413: "the body, or the batch, is over the limit",
    415: "the body is not declared JSON, or is compressed",
    422: "an empty body, or records that fail validation (every record, feature and rule named)",
}
_MODEL = {
    502: "the model's output is not a finite number",
    503: "no model loaded yet, or the prediction store is unavailable",
    504: "the model did not answer in time",
}
_LOADING = {503: "no model loaded yet"}
_UNKNOWN = {404: "this server does not serve that model or version"}
_HEADERS = {
    401: {"WWW-Authenticate": {"required": True, "schema": {"type": "string"}}},
    429: {"Retry-After": {"required": True, "schema": {"type": "string"}}},
}
_FORCE = {
    "name": "force",
    "in": "query",
    "required": False,
    "description": "true: load the version again even if it is the one serving",
    "schema": {"type": "string", "enum": ["true", "false"]},
}


@dataclass(frozen=True)
class Operation:
    """What one operation takes and answers, beyond what FastAPI knows from its route."""

    answer: str  # the component of its 200 body ("" for text)
    role: str | None = None  # the key's role it needs (None: open)
    body: str | None = None  # the component of its JSON request body
    errors: tuple[dict[int, str], ...] = ()
    media: str = "application/json"
    query: tuple[dict[str, Any], ...] = ()
    answered: tuple[int, ...] = ()  # statuses past 200 whose body is the answer's, not an error


_INFER = Operation("V2InferenceResponse", "predict", "V2InferenceRequest", (_AUTH, _BODY, _UNKNOWN, _MODEL))
OPERATIONS: dict[tuple[str, str], Operation] = {
    ("post", "/predict"): Operation("PredictResponse", "predict", "PredictRequest", (_AUTH, _BODY, _MODEL)),
    ("post", "/predict/batch"): Operation("BatchResponse", "predict", "BatchRequest", (_AUTH, _BODY, _MODEL)),
    ("post", "/feedback"): Operation(
        "FeedbackResponse",
        "admin",
        "FeedbackRequest",
        (_AUTH, _BODY, {404: "no prediction with this id", 503: "the prediction store is unavailable"}),
    ),
    ("post", "/invocations"): Operation("MlflowResponse", "predict", "MlflowRequest", (_AUTH, _BODY, _MODEL)),
    ("get", "/v2"): Operation("V2ServerMetadata"),
    ("get", "/v2/health/live"): Operation("V2Live"),
    ("get", "/v2/health/ready"): Operation("V2Ready", errors=({503: "not ready"},), answered=(503,)),
    ("get", "/v2/models/{name}/ready"): Operation("V2ModelReady", errors=(_UNKNOWN, _LOADING)),
    ("get", "/v2/models/{name}/versions/{version}/ready"): Operation("V2ModelReady", errors=(_UNKNOWN, _LOADING)),
    ("get", "/v2/models/{name}"): Operation("V2ModelMetadata", "predict", errors=(_AUTH, _UNKNOWN, _LOADING)),
    ("get", "/v2/models/{name}/versions/{version}"): Operation(
        "V2ModelMetadata", "predict", errors=(_AUTH, _UNKNOWN, _LOADING)
    ),
    ("post", "/v2/models/{name}/infer"): _INFER,
    ("post", "/v2/models/{name}/versions/{version}/infer"): _INFER,
    ("get", "/health/live"): Operation("Live"),
    ("get", "/health/ready"): Operation("Ready", errors=({503: "no model loaded, or shutting down"},), answered=(503,)),
    ("get", "/metrics"): Operation("", media="text/plain"),
    ("get", "/model"): Operation("Model", "predict", errors=(_AUTH, _LOADING)),
    ("post", "/admin/reload"): Operation(
        "Reload",
        "admin",
        errors=(
            _AUTH,
            {502: "the new version failed to load; the old one keeps serving", 503: "the registry is unavailable"},
        ),
        query=(_FORCE,),
        answered=(502,),
    ),
}


def _responses(path: str, op: Operation) -> dict[str, Any]:
    """Every status ``op`` can answer with, and its body."""
    error = ref(_ERROR_OF[protocol_of(path)])
    statuses: dict[int, str] = dict(_ANYWHERE)
    if not path.startswith(ALWAYS_ADMITTED):
        statuses |= _ADMITTED
    for more in op.errors:
        for status, text in more.items():
            statuses[status] = f"{statuses[status]}; {text}" if status in statuses else text
    ok = {"schema": ref(op.answer)} if op.answer else {"schema": {"type": "string"}}
    responses: dict[str, Any] = {"200": {"description": "the answer", "content": {op.media: ok}}}
    if op.answer == "V2InferenceResponse":  # binary outputs: the JSON header, then the tensors' bytes
        responses["200"]["content"]["application/octet-stream"] = {"schema": {"type": "string", "format": "binary"}}
        responses["200"]["headers"] = {HEADER_LENGTH: {"required": False, "schema": {"type": "string"}}}
    for status, text in sorted(statuses.items()):
        body = {"schema": ref(op.answer) if status in op.answered else error}
        responses[str(status)] = {"description": text, "content": {"application/json": body}}
        if status in _HEADERS:
            responses[str(status)]["headers"] = _HEADERS[status]
    return responses


def _path_parameters(operation: dict[str, Any], name: str | None, versions: list[str]) -> None:
    """The model name and version a v2 path can name: the served ones (any other is a 404)."""
    for parameter in operation.get("parameters", []):
        if parameter.get("in") != "path":
            continue
        if parameter["name"] == "name" and name is not None:
            parameter["schema"] = {"type": "string", "enum": [name]}
        elif parameter["name"] == "version" and versions:
            parameter["schema"] = {"type": "string", "enum": versions}


def model_openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document of the routes, with every operation's body, parameters, security and answers."""
    spec = get_openapi(title=app.title, version=app.version, routes=app.routes)
    state = getattr(app.state, "shipml", None)
    deployment = state.manager.current if state is not None else None
    current = deployment.primary if deployment is not None else None
    schema = current.bundle.schema if current else None
    signature = (
        ModelSignature.of(current.name, current.version, current.bundle.schema, current.bundle.classes)
        if current
        else None
    )
    regression = None if schema is None else schema.target.task == "regression"
    classes = [str(c) for c in current.bundle.classes] if current and not regression else []
    max_batch = state.settings.serve.max_batch if state is not None else 10_000
    components: dict[str, JsonSchema] = {
        "Features": features_schema(schema),
        "PredictRequest": predict_request_schema(),
        "BatchRequest": batch_request_schema(max_batch),
        "MlflowRequest": mlflow_request_schema(schema),
        "FeedbackRequest": feedback_request_schema(),
        "V2InferenceRequest": v2_infer_request_schema(signature),
        **answer_schemas(regression, classes),
    }
    spec.setdefault("components", {}).setdefault("schemas", {}).update(components)
    spec["components"]["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer"},
        "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    }
    shown = examples(schema, signature)
    auth_on = state.settings.auth.enabled if state is not None else True
    versions = sorted({v.version for v in deployment.variants}) if deployment is not None else []
    for path, operations in spec.get("paths", {}).items():
        for method, operation in operations.items():
            op = OPERATIONS.get((method, path))
            if op is not None:
                _document(operation, path, op, shown, secured=op.role is not None and auth_on)
                _path_parameters(operation, current.name if current else None, versions)
    return spec


def _document(operation: dict[str, Any], path: str, op: Operation, shown: dict[str, Any], secured: bool) -> None:
    """Set ``operation``'s answers, request body (with its example), query parameters and security."""
    operation["responses"] = _responses(path, op)
    if op.body is not None:
        content: dict[str, Any] = {"application/json": {"schema": ref(op.body)}}
        if op.body in shown:
            content["application/json"]["example"] = shown[op.body]
        if op.body == "V2InferenceRequest":
            # binary tensors: the JSON header, then the bytes. Its length travels in Inference-Header-Content-Length,
            # which is not declared: a fuzzer sending it with JSON bodies would stop them all at the header check
            content["application/octet-stream"] = {"schema": {"type": "string", "format": "binary"}}
        operation["requestBody"] = {"required": True, "content": content}
    if op.query:
        operation["parameters"] = [*operation.get("parameters", []), *op.query]
    if secured:
        operation["security"] = [{"bearer": []}, {"apiKey": []}]
