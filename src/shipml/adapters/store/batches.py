"""PredictionBatch: the predictions of one chunk of a batch request, logged as one row of ``prediction_batches``.

A 10,000-row ``/predict/batch`` logged as 10,000 rows of ``predictions`` cost the writer more than the
prediction itself (a tuple of ~110 values per row, bound and stepped by the driver). The chunk is kept
instead as one row holding its columns: the ids, one array per feature, the labels and scores, and the
full outputs, in a versioned JSON payload. Readers see the same predictions either way: ``read_window``,
``get``, ``count`` and the feedback join look in both tables.

Ids: a batch's ids come from one ``Uuid7Generator.strings`` call, so they increase strictly, and the row
keeps the first and the last. ``prediction_batches.first_id`` is the key, so finding the batch of an id is
a short backwards range scan: batches whose first id is at or before it and at most ``ID_SPAN_MS``
older (a generator takes ~4,096 ids per millisecond, so even a huge batch spans a few seconds).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from shipml.adapters.store.catalog import SchemaSlots

PAYLOAD_VERSION = 1
ID_SPAN_MS = 10 * 60 * 1000  # how far back from an id its batch's first id can be (generous, see above)


@dataclass(frozen=True)
class PredictionBatch:
    """Accepted records of one chunk and their answers, all "ok", of one schema (registered with the store).

    ``features``: the validated values per record (as ``PredictionRow.features``); ``classes`` and ``proba``
    (one row of probabilities per record, in ``classes`` order) for a classifier, ``values`` for a regressor;
    ``labels``: the predicted class per record (classification)."""

    ids: Sequence[str]
    ts: float
    model: str
    version: str
    variant: str
    schema_sha256: str
    features: Sequence[dict[str, Any]]
    latency_ms: float
    labels: Sequence[Any] | None = None
    classes: Sequence[str] | None = None
    proba: Sequence[Sequence[float]] | None = None
    values: Sequence[float] | None = None
    role: str = "primary"
    routing_keys: Sequence[str | None] | None = None

    def __len__(self) -> int:
        return len(self.ids)


def encode(batch: PredictionBatch, layout: SchemaSlots) -> bytes:
    """The payload: one list per column, features by their exact names (numeric as floats, categorical as text)."""
    records = batch.features
    numeric: dict[str, list[Any]] = {}
    categorical: dict[str, list[Any]] = {}
    for f in layout.features:
        name = f.name
        target = categorical if f.slot_kind == "categorical" else numeric
        target[name] = [r.get(name) for r in records]
    payload: dict[str, Any] = {
        "v": PAYLOAD_VERSION,
        "ids": batch.ids,
        "keys": batch.routing_keys,
        "numeric": numeric,
        "categorical": categorical,
    }
    if batch.proba is not None:
        payload["classes"] = batch.classes
        payload["proba"] = batch.proba
        payload["labels"] = [None if x is None else str(x) for x in batch.labels or ()]
    else:
        payload["values"] = batch.values
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)


def scores(batch: PredictionBatch) -> list[float] | None:
    """``predictions.score`` per record (see tables.predictions.score)."""
    if batch.values is not None:
        return list(batch.values)
    if batch.proba is None:
        return None
    return [p[1] if len(p) == 2 else max(p) for p in batch.proba]


@dataclass(frozen=True)
class DecodedBatch:
    """A payload read back: numpy columns of the batch's records."""

    ids: list[str]
    routing_keys: list[str | None]
    numeric: dict[str, np.ndarray]
    categorical: dict[str, np.ndarray]
    labels: np.ndarray
    score: np.ndarray
    classes: list[str] | None
    proba: list[list[float]] | None
    values: list[float] | None

    def record(self, i: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """The features and the outputs of record ``i``, as a ``predictions`` row holds them."""
        features: dict[str, Any] = {name: _finite_or_none(col[i]) for name, col in self.numeric.items()}
        features.update({name: col[i] for name, col in self.categorical.items()})
        if self.proba is not None:
            outputs: dict[str, Any] = {
                "predicted_class": self.labels[i],
                "probabilities": dict(zip(self.classes or (), self.proba[i], strict=True)),
            }
        else:
            outputs = {"value": (self.values or [])[i]}
        return features, outputs


def decode(blob: bytes | memoryview) -> DecodedBatch:
    payload = orjson.loads(bytes(blob))
    if payload.get("v") != PAYLOAD_VERSION:
        raise ValueError(f"prediction batch payload version {payload.get('v')!r} is not {PAYLOAD_VERSION}")
    n = len(payload["ids"])
    proba, values = payload.get("proba"), payload.get("values")
    if values is not None:
        score = np.array(values, dtype=np.float64)
        labels = np.full(n, None, dtype=object)
    else:
        score = np.array([p[1] if len(p) == 2 else max(p) for p in proba], dtype=np.float64)
        labels = np.array(payload["labels"], dtype=object)
    return DecodedBatch(
        ids=payload["ids"],
        routing_keys=payload["keys"] if payload["keys"] is not None else [None] * n,
        numeric={k: np.array([np.nan if v is None else v for v in col], dtype=np.float64)
                 for k, col in payload["numeric"].items()},
        categorical={k: np.array(col, dtype=object) for k, col in payload["categorical"].items()},
        labels=labels,
        score=score,
        classes=payload.get("classes"),
        proba=proba,
        values=values,
    )  # fmt: skip


def id_floor(prediction_id: str) -> str:
    """The smallest first id a batch holding ``prediction_id`` can have (``ID_SPAN_MS`` earlier)."""
    digits = prediction_id[:8] + prediction_id[9:13]
    try:
        ms = int(digits, 16)
    except ValueError:
        return prediction_id
    h = f"{max(0, ms - ID_SPAN_MS):012x}"
    return f"{h[:8]}-{h[8:]}"


def _finite_or_none(value: float) -> float | None:
    return None if value != value else float(value)  # NaN: the record's null
