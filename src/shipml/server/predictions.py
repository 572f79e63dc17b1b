"""Validate, predict and log a list of records: the one path every protocol goes through."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anyio.to_thread

from shipml.adapters.prediction_store import PredictionRow, StoreError, StoreFull, StoreWriter
from shipml.core.ids import uuid7_strings
from shipml.core.predictor import Outputs
from shipml.core.records import Accepted, FieldError
from shipml.server.errors import ApiError
from shipml.server.metrics import ServerMetrics
from shipml.server.model_manager import Deployment

# A verified fast predictor answers this many rows in well under a millisecond: run it on the loop.
INLINE_MAX_ROWS = 8


@dataclass(frozen=True)
class RecordResult:
    """One record's answer: an id and outputs, or the errors that refused it."""

    index: int
    prediction_id: str | None = None
    label: Any = None
    probabilities: dict[str, float] | None = None
    value: float | None = None
    errors: tuple[FieldError, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.errors

    def body(self) -> dict[str, Any]:
        if self.errors:
            return {
                "index": self.index,
                "error": {"code": "validation_error", "details": [e.to_dict() for e in self.errors]},
            }
        out: dict[str, Any] = {"index": self.index, "prediction_id": self.prediction_id}
        if self.probabilities is not None:
            out["predicted_class"] = self.label
            out["probabilities"] = self.probabilities
        else:
            out["value"] = self.value
        return out


class PredictionService:
    """Runs records through a Deployment and the prediction log."""

    def __init__(self, writer: StoreWriter | None, durability: str, metrics: ServerMetrics) -> None:
        self.writer = writer
        self.durability = durability
        self.metrics = metrics

    async def run(self, deployment: Deployment, records: Sequence[object]) -> list[RecordResult]:
        started = time.perf_counter()
        accepted: list[tuple[int, Accepted]] = []
        results: dict[int, RecordResult] = {}
        for i, record in enumerate(records):
            checked = deployment.validator.check(record, i)
            if isinstance(checked, Accepted):
                accepted.append((i, checked))
            else:
                results[i] = RecordResult(i, errors=tuple(checked))
        name, version, variant = deployment.name, deployment.version, deployment.variant
        if results:
            self.metrics.predictions.labels(name, version, variant, "invalid").inc(len(results))
        if accepted:
            rows = [a.values for _, a in accepted]
            predictor = deployment.bundle.predictor
            if predictor.name == "fast" and len(rows) <= INLINE_MAX_ROWS:
                outputs = predictor.predict(rows)  # ~0.1 ms: cheaper than a hop to a worker thread
            else:
                outputs = await anyio.to_thread.run_sync(predictor.predict, rows)
            latency_ms = (time.perf_counter() - started) * 1000.0
            log_rows = self._results(deployment, accepted, outputs, results, latency_ms)
            await self._log(log_rows)
            self.metrics.child(self.metrics.predictions, name, version, variant, "ok").inc(len(accepted))
            for _, a in accepted:
                for feature, rule in a.tolerated:
                    self.metrics.tolerated.labels(name, feature, rule).inc()
        return [results[i] for i in range(len(records))]

    def _results(
        self,
        deployment: Deployment,
        accepted: list[tuple[int, Accepted]],
        outputs: Outputs,
        results: dict[int, RecordResult],
        latency_ms: float,
    ) -> list[PredictionRow]:
        now = time.time()
        rows = []
        classes = [str(c) for c in outputs.classes]
        labels = outputs.labels() if outputs.proba is not None else None
        ids = uuid7_strings(len(accepted))
        for k, (i, a) in enumerate(accepted):
            pid = ids[k]
            if outputs.proba is not None and labels is not None:
                proba = {c: float(p) for c, p in zip(classes, outputs.proba[k], strict=True)}
                result = RecordResult(i, pid, labels[k], proba)
                logged: dict[str, Any] = {"predicted_class": labels[k], "probabilities": proba}
            else:
                assert outputs.values is not None  # noqa: S101 - regression
                value = float(outputs.values[k])
                result = RecordResult(i, pid, value=value)
                logged = {"value": value}
            results[i] = result
            rows.append(
                PredictionRow(
                    pid, now, deployment.name, deployment.version, deployment.variant, a.values, logged, latency_ms
                )
            )
        return rows

    async def _log(self, rows: list[PredictionRow]) -> None:
        if self.writer is None:
            return
        try:
            if self.durability != "commit":
                self.writer.enqueue(rows)
                return
            waiting = self.writer.submit_waitable(rows)
        except StoreFull:
            self.metrics.shed.inc()
            raise ApiError(503, "overloaded", "the prediction log is full; retry later") from None
        try:
            await waiting
        except StoreError:
            raise ApiError(503, "store_unavailable", "the prediction could not be logged; retry later") from None
