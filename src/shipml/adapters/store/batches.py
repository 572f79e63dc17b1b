"""The storage encoding of many answered predictions of one variant: one row of ``prediction_batches``.

A 10,000-row ``/predict/batch`` logged as 10,000 rows of ``predictions`` cost the writer more than the
prediction itself (a tuple of ~110 values per row, bound and stepped by the driver). A unit of at least
``predictions.BATCH_MIN_ROWS`` answered predictions is kept instead as one row holding its columns: the ids, one array per feature, the labels and scores, and the
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
from shipml.core.prediction import Prediction, PredictionBatch, Served, Status, score_of

PAYLOAD_VERSION = 1
ID_SPAN_MS = 10 * 60 * 1000  # how far back from an id its batch's first id can be (generous, see above)


def encode(predictions: Sequence[Prediction], layout: SchemaSlots) -> bytes:
    """The payload of answered predictions of one variant: one list per column, features by their exact names
    (numeric as floats, categorical as text)."""
    records = [p.features for p in predictions]
    numeric: dict[str, list[Any]] = {}
    categorical: dict[str, list[Any]] = {}
    for f in layout.features:
        name = f.name
        target = categorical if f.slot_kind == "categorical" else numeric
        target[name] = [r.get(name) for r in records]
    keys = [p.key for p in predictions]
    payload: dict[str, Any] = {
        "v": PAYLOAD_VERSION,
        "ids": [p.id for p in predictions],
        "keys": keys if any(k is not None for k in keys) else None,
        "numeric": numeric,
        "categorical": categorical,
    }
    if predictions[0].proba is not None:
        payload["classes"] = predictions[0].served.classes
        payload["proba"] = [p.proba for p in predictions]
        payload["labels"] = [None if p.label is None else str(p.label) for p in predictions]
    else:
        payload["values"] = [p.value for p in predictions]
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)


def encode_columns(batch: PredictionBatch, layout: SchemaSlots) -> bytes:
    """``encode``'s payload, from a batch's columns: the numeric ones written by orjson from their arrays
    (NaN as null, as a missing value is), with no Python object per value."""
    numeric: dict[str, Any] = {}
    categorical: dict[str, Any] = {}
    n = len(batch)
    for f in layout.features:
        column = batch.columns.get(f.name)
        if f.slot_kind == "categorical":
            categorical[f.name] = [None] * n if column is None else column.tolist()
        elif column is None:
            numeric[f.name] = [None] * n
        else:  # float64 (C-contiguous for orjson); NaN is written null
            numeric[f.name] = column if column.dtype == np.float64 and column.flags.c_contiguous else column.tolist()
    payload: dict[str, Any] = {"v": PAYLOAD_VERSION, "ids": batch.ids, "keys": batch.keys, "numeric": numeric,
                               "categorical": categorical}  # fmt: skip
    if batch.proba is not None:
        assert batch.labels is not None  # noqa: S101 - a classifier's
        payload["classes"] = batch.served.classes
        payload["proba"] = np.ascontiguousarray(batch.proba, dtype=np.float64)
        payload["labels"] = [None if label is None else str(label) for label in batch.labels]
    else:
        payload["values"] = np.ascontiguousarray(batch.values, dtype=np.float64)
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)


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

    def prediction(self, i: int, served: Served, ts: float, latency_ms: float) -> Prediction:
        """Record ``i`` as the prediction it was (answered: a batch holds only those) by ``served``. Its position
        in its request is not kept: ``index`` 0, as a row's."""
        features: dict[str, Any] = {name: _finite_or_none(col[i]) for name, col in self.numeric.items()}
        features.update({name: col[i] for name, col in self.categorical.items()})
        if self.proba is not None:
            return Prediction(self.ids[i], ts, served, 0, features, self.routing_keys[i], latency_ms, Status.OK,
                              self.labels[i], self.proba[i])  # fmt: skip
        value = (self.values or [])[i]
        return Prediction(
            self.ids[i], ts, served, 0, features, self.routing_keys[i], latency_ms, Status.OK, value=value
        )


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
        score = np.array([score_of(p) for p in proba], dtype=np.float64)
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
