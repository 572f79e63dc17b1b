"""shipml's own API: the bodies of /predict, /predict/batch and /feedback, and the one-record path."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from shipml.core.prediction import Prediction, PredictionBatch, Record, Served, Status
from shipml.server.errors import ApiError
from shipml.server.http import authorize_key
from shipml.server.state import AppState

if TYPE_CHECKING:
    from shipml.server.model_manager import Deployment
    from shipml.server.predictions import PredictionService

MAX_LABEL_CHARS = 1000  # a class name, not a document: longer labels are refused, never cut


def model_of(served: Served) -> dict[str, str]:
    return {"name": served.model, "version": served.version, "variant": served.variant}


def raise_for_invalid(predictions: list[Prediction]) -> None:
    """422 naming every record, feature and rule, when any record was refused; 502 when the model answered
    a record with NaN or an infinity (the model's fault, not the client's, and never a silent null)."""
    details = [e.to_dict() for p in predictions for e in p.errors]
    if not details:
        return
    broken = sum(1 for p in predictions if p.status is Status.OUTPUT_INVALID)
    if broken:
        raise ApiError(
            502, "model_output_invalid", f"the model's output is not a finite number for {broken} record(s)", details
        )
    refused = sum(1 for p in predictions if p.status is Status.INVALID)
    raise ApiError(422, "validation_error", f"{refused} record(s) failed validation", details)


def batch_answer(predictions: list[Prediction], served: Served) -> dict[str, Any]:
    """The /predict/batch answer: the deployment's primary (``served``), each record's answer in order, and how
    many were refused."""
    answers: list[dict[str, Any]] = []
    failed = 0
    for p in predictions:
        proba = p.proba
        if p.status is Status.OK and p.routed is None and proba is not None:
            # a classifier's answered record outside an experiment, the most common entry: Prediction.answer's
            # dict built inline (its keys in the same order), not through two calls per record
            classes = p.served.classes
            if len(classes) == 2 == len(proba):  # a binary classifier's two probabilities (a third of the time)
                probabilities = {classes[0]: proba[0], classes[1]: proba[1]}
            else:
                probabilities = dict(zip(classes, proba, strict=True))
            answers.append({"index": p.index, "prediction_id": p.id, "predicted_class": p.label,
                            "probabilities": probabilities})  # fmt: skip
            continue
        failed += p.status is not Status.OK
        answers.append(p.answer())
    return {"model": model_of(served), "predictions": answers, "failed": failed}


def columns_answer(batch: PredictionBatch, served: Served) -> dict[str, Any]:
    """``batch_answer`` of a batch of columns (every record answered, outside an experiment): the same JSON,
    built in one pass with no ``Prediction`` per record."""
    ids, positions = batch.ids, batch.positions
    if batch.proba is None:
        assert batch.values is not None  # noqa: S101 - a regressor's
        answers = [{"index": i, "prediction_id": pid, "value": v}
                   for i, pid, v in zip(positions, ids, batch.values.tolist(), strict=True)]  # fmt: skip
    else:
        classes, labels, rows = batch.served.classes, batch.labels or [], batch.proba.tolist()
        if len(classes) == 2 == batch.proba.shape[1]:
            c0, c1 = classes
            answers = [{"index": i, "prediction_id": pid, "predicted_class": label, "probabilities": {c0: p[0], c1: p[1]}}
                       for i, pid, label, p in zip(positions, ids, labels, rows, strict=True)]  # fmt: skip
        else:
            answers = [{"index": i, "prediction_id": pid, "predicted_class": label,
                        "probabilities": dict(zip(classes, p, strict=True))}
                       for i, pid, label, p in zip(positions, ids, labels, rows, strict=True)]  # fmt: skip
    return {"model": model_of(served), "predictions": answers, "failed": 0}


def columns_answer_json(batch: PredictionBatch, served: Served) -> bytes:
    """``columns_answer``'s JSON. A binary classifier's (the common big batch) is spliced from each column
    written whole by orjson (the indices, the ids, the labels, each class's probabilities): no dict per
    record; anything else is ``columns_answer`` written by orjson."""
    proba, classes = batch.proba, batch.served.classes
    if proba is None or batch.labels is None or len(classes) != 2 or proba.shape[1] != 2:
        return orjson.dumps(columns_answer(batch, served))
    n = len(batch)
    head = orjson.dumps({"model": model_of(served), "predictions": []})[:-2]  # up to the open list
    if not n:
        return head + b'],"failed":0}'
    numpy = orjson.OPT_SERIALIZE_NUMPY
    labels = {label: orjson.dumps(label) for label in set(batch.labels)}
    k0, k1 = orjson.dumps(classes[0]), orjson.dumps(classes[1])
    # one entry: {"index":I,"prediction_id":"ID","predicted_class":L,"probabilities":{"c0":P0,"c1":P1}},
    parts: list[bytes | None] = [b'{"index":', None, b',"prediction_id":"', None, b'","predicted_class":', None,
                                 b',"probabilities":{' + k0 + b":", None, b"," + k1 + b":", None, b"}},"] * n  # fmt: skip
    parts[1::11] = orjson.dumps(list(batch.positions))[1:-1].split(b",")
    parts[3::11] = ",".join(batch.ids).encode().split(b",")  # ids are hex digits and dashes
    parts[5::11] = list(map(labels.__getitem__, batch.labels))
    parts[7::11] = orjson.dumps(np.ascontiguousarray(proba[:, 0]), option=numpy)[1:-1].split(b",")
    parts[9::11] = orjson.dumps(np.ascontiguousarray(proba[:, 1]), option=numpy)[1:-1].split(b",")
    return head + b"".join(parts)[:-1] + b'],"failed":0}'  # type: ignore[arg-type]


def batch_list(body: Any, limit: int) -> list[Any]:
    """The records of a /predict/batch body as decoded, checked against ``limit`` before anything else is built."""
    records = body.get("records") if isinstance(body, dict) else body
    if not isinstance(records, list):
        raise ApiError(422, "validation_error", 'expected {"records": [{...}, ...]} or a JSON array of records')
    if len(records) > limit:
        raise ApiError(413, "batch_too_large", f"{len(records)} records; the limit is {limit}")
    return records


def batch_features(records: list[Any], header_key: str | None) -> tuple[list[Any], list[str | None] | None] | None:
    """The features and routing keys (None: no record has one) of ``records`` as ``batch_records`` reads them,
    without a ``Record`` each, when they are all bare or all ``{"features": {...}, "id": ...}``; None for a mix
    (``batch_records`` reads it). A bare record's features are the record itself: one holding a wrapped record
    is not clean (an object is no feature value), so the columnar path turns it down whole."""
    if not records:
        return None
    first = records[0]
    if not (type(first) is dict and type(first.get("features")) is dict):
        return records, None if header_key is None else [header_key] * len(records)
    features, keys = [], []
    for r in records:
        if type(r) is not dict or type(inner := r.get("features")) is not dict:
            return None
        features.append(inner)
        keys.append(routing_key(r.get("id")) or header_key)
    return features, keys if any(k is not None for k in keys) else None


async def predict_batch(
    service: PredictionService, deployment: Deployment, body: Any, limit: int, header_key: str | None = None
) -> bytes:
    """The /predict/batch answer's JSON for ``body``: a clean batch end to end as columns
    (``PredictionService.run_columns``), any other a record at a time (``run``); the same JSON either way."""
    records = batch_list(body, limit)
    found = batch_features(records, header_key)
    served = deployment.primary.served

    def answer(batch: PredictionBatch) -> bytes:
        return columns_answer_json(batch, served)

    answered = None if found is None else await service.run_columns(deployment, *found, answer)
    if isinstance(answered, bytes):
        return answered
    if answered is None:
        answered = await service.run(deployment, batch_records(records, limit, header_key))
    return orjson.dumps(batch_answer(answered, served), option=orjson.OPT_SERIALIZE_NUMPY)


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


def batch_records(body: Any, limit: int, header_key: str | None = None) -> list[Record]:
    """The records of a /predict/batch body, checked against ``limit`` before anything else is built, each with
    its routing key: a record ``{"features": {...}, "id": "k"}`` has the key "k"; a bare record of features, or
    one without an ``id``, has ``header_key`` (the request's ``X-Routing-Key``)."""
    records = body.get("records") if isinstance(body, dict) else body
    if not isinstance(records, list):
        raise ApiError(422, "validation_error", 'expected {"records": [{...}, ...]} or a JSON array of records')
    if len(records) > limit:
        raise ApiError(413, "batch_too_large", f"{len(records)} records; the limit is {limit}")
    out = []
    for r in records:
        if isinstance(r, dict) and isinstance(r.get("features"), dict):
            out.append(Record(r["features"], routing_key(r.get("id")) or header_key))
        else:
            out.append(Record(r, header_key))
    return out


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
) -> tuple[dict[str, Any], Served, str]:
    """One record through auth, then the service (routed by its ``id``, else ``X-Routing-Key``; validated,
    predicted, logged, shadowed): (answer, who answered, key name)."""
    principal = authorize_key(st.auth, key, "predict", client)
    features = one_record(body)
    [prediction] = await st.service.run(st.deployment(), [Record(features, routing_key(body.get("id")) or header_key)])
    raise_for_invalid([prediction])
    return prediction.answer(single=True), prediction.served, principal.name
