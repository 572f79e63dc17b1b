"""Predictions as the store logs them, built from the fields of a log row (for the store's own tests)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa

from shipml.adapters.store import PredictionStore, tables
from shipml.core.prediction import Prediction, Role, Served, Status
from shipml.core.records import FieldError


def logged(
    prediction_id: str,
    ts: float,
    model: str,
    version: str,
    variant: str,
    features: Any,
    outputs: dict[str, Any],
    latency_ms: float,
    role: str = "primary",
    routing_key: str | None = None,
    schema_sha256: str = "",
    status: str = "ok",
) -> Prediction:
    """One prediction whose log row holds these fields; ``outputs`` as the row's JSON holds them
    (``{"predicted_class", "probabilities"}``, ``{"value"}``, ``{"errors": [...]}``, ``{"error"}`` or nothing)."""
    probabilities: dict[str, float] | None = outputs.get("probabilities")
    classes = tuple(probabilities) if probabilities is not None else ()
    served = Served(model, version, variant, Role(role), schema_sha256, classes)
    return Prediction(
        prediction_id, ts, served, 0, features, routing_key, latency_ms, Status(status),
        outputs.get("predicted_class"), list(probabilities.values()) if probabilities is not None else None,
        outputs.get("value"), tuple(FieldError(**e) for e in outputs.get("errors", ())), outputs.get("error"),
    )  # fmt: skip


def label_all(store: PredictionStore, truths: Iterable[tuple[str, str | None, float | None]]) -> None:
    """Feedback (prediction id, label, value) for predictions already in ``store``, in one transaction: for tests
    whose data is thousands of labels. The store's own path (``feedback.add``, a commit per label, as /feedback
    records one) is tested with the store."""
    now = time.time()
    rows = [{"prediction_id": pid, "ts": now, "label": label, "value": value} for pid, label, value in truths]
    if rows:
        with store.database.engine.begin() as conn:
            conn.execute(sa.insert(tables.feedback), rows)


def batch_of(
    ids: Sequence[str],
    ts: float,
    model: str,
    version: str,
    variant: str,
    schema_sha256: str,
    features: Sequence[dict[str, Any]],
    latency_ms: float,
    *,
    labels: Sequence[Any] | None = None,
    classes: Sequence[str] = (),
    proba: Sequence[Sequence[float]] | None = None,
    values: Sequence[float] | None = None,
    role: str = "primary",
    routing_keys: Sequence[str | None] | None = None,
) -> list[Prediction]:
    """The answered predictions of one variant's chunk (one unit for the writer), in columns."""
    served = Served(model, version, variant, Role(role), schema_sha256, tuple(classes))
    return [
        Prediction(
            prediction_id, ts, served, i, features[i], routing_keys[i] if routing_keys is not None else None,
            latency_ms, Status.OK, labels[i] if labels is not None else None,
            list(proba[i]) if proba is not None else None, values[i] if values is not None else None,
        )
        for i, prediction_id in enumerate(ids)
    ]  # fmt: skip
