"""shipml's own API: the bodies of /predict, /predict/batch and /feedback, and the one-record path."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from shipml.server.errors import ApiError
from shipml.server.http import authorize_key
from shipml.server.model_manager import Variant
from shipml.server.predictions import RecordResult
from shipml.server.state import AppState

MAX_LABEL_CHARS = 1000  # a class name, not a document: longer labels are refused, never cut


def model_of(dep: Variant) -> dict[str, str]:
    return {"name": dep.name, "version": dep.version, "variant": dep.variant}


def raise_for_invalid(results: list[RecordResult]) -> None:
    """422 naming every record, feature and rule, when any record was refused; 502 when the model answered
    a record with NaN or an infinity (the model's fault, not the client's, and never a silent null)."""
    details = [e.to_dict() for r in results for e in r.errors]
    if not details:
        return
    broken = sum(1 for r in results if r.code == "model_output_invalid" and r.errors)
    if broken:
        raise ApiError(
            502, "model_output_invalid", f"the model's output is not a finite number for {broken} record(s)", details
        )
    raise ApiError(
        422, "validation_error", f"{sum(1 for r in results if r.errors)} record(s) failed validation", details
    )


def one_record(body: Any) -> dict[str, Any]:
    """The features of a /predict body ``{"features": {...}, "id": optional}``; other keys are ignored."""
    if not isinstance(body, dict) or not isinstance(body.get("features"), dict):
        raise ApiError(
            422,
            "validation_error",
            'expected {"features": {...}, "id": optional}',
            [
                {
                    "record": 0,
                    "feature": "features",
                    "rule": "type",
                    "message": "an object of feature values is required",
                }
            ],
        )
    features: dict[str, Any] = body["features"]
    return features


def batch_records(body: Any, limit: int) -> list[Any]:
    """The records of a /predict/batch body, checked against ``limit`` before anything else is built."""
    return batch_records_and_keys(body, limit)[0]


def batch_records_and_keys(body: Any, limit: int) -> tuple[list[Any], list[str | None]]:
    """The records of a /predict/batch body and their routing keys (a record ``{"features": {...}, "id": "k"}``
    has the key "k"; a bare record of features has none), checked against ``limit`` first."""
    records = body.get("records") if isinstance(body, dict) else body
    if not isinstance(records, list):
        raise ApiError(422, "validation_error", 'expected {"records": [{...}, ...]} or a JSON array of records')
    if len(records) > limit:
        raise ApiError(413, "batch_too_large", f"{len(records)} records; the limit is {limit}")
    out, keys = [], []
    for r in records:
        wrapped = isinstance(r, dict) and isinstance(r.get("features"), dict)
        out.append(r["features"] if wrapped else r)
        keys.append(routing_key(r.get("id")) if wrapped else None)
    return out, keys


def routing_key(value: Any) -> str | None:
    """A record's ``id`` as a routing key: text or a whole number, at most 256 characters; anything else none."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value)
    return text if 0 < len(text) <= 256 else None


@dataclass(frozen=True)
class FeedbackRequest:
    prediction_id: str
    label: str | None
    value: float | None


def feedback_request(body: Any) -> FeedbackRequest:
    """A /feedback body: ``{"prediction_id", "label"}`` (classification) or ``{"prediction_id", "value"}``."""
    if not isinstance(body, dict) or not isinstance(body.get("prediction_id"), str):
        raise ApiError(422, "validation_error", 'expected {"prediction_id": "...", "label": ... or "value": ...}')
    pid: str = body["prediction_id"]
    if not pid or len(pid) > 64:
        raise ApiError(422, "validation_error", f"`prediction_id` must be 1 to 64 characters, got {len(pid)}")
    label, value = body.get("label"), body.get("value")
    if (label is None) == (value is None):
        raise ApiError(422, "validation_error", "give exactly one of `label` (classification) or `value` (regression)")
    if value is not None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ApiError(422, "validation_error", "`value` must be a number")
        if not math.isfinite(value):  # NaN or an infinity as truth would turn the window's rmse and mae into NaN
            raise ApiError(422, "validation_error", f"`value` must be a finite number, got {value}")
        return FeedbackRequest(pid, None, float(value))
    if not isinstance(label, str | int | float | bool):
        raise ApiError(422, "validation_error", "`label` must be a string, a number or a boolean")
    if isinstance(label, float) and not math.isfinite(label):
        raise ApiError(422, "validation_error", f"`label` must be a finite number when a number, got {label}")
    text = str(label)
    if len(text) > MAX_LABEL_CHARS:
        raise ApiError(
            422, "validation_error", f"`label` is {len(text)} characters; at most {MAX_LABEL_CHARS} are accepted"
        )
    return FeedbackRequest(pid, text, None)


async def predict_one(
    st: AppState, key: str | None, client: str | None, body: Any, header_key: str | None = None
) -> tuple[dict[str, Any], Variant, str]:
    """One record through auth, routing (its ``id``, else ``X-Routing-Key``), validation, the model and the
    log: (answer, the variant that answered, key name)."""
    principal = authorize_key(st.auth, key, "predict", client)
    features = one_record(body)
    deployment = st.deployment()
    routed = routing_key(body.get("id")) or header_key
    [result] = await st.service.run_routed(deployment, [features], [routed])
    raise_for_invalid([result])
    answer = result.body()
    answer.pop("index")
    dep = deployment.primary
    if result.variant is not None:
        dep = next(v for v in deployment.variants if v.variant == result.variant)
        answer.pop("variant"), answer.pop("version")
    answer["model"] = model_of(dep)
    return answer, dep, principal.name
