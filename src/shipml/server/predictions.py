"""Validate, predict and log a list of records: the one path every protocol goes through."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anyio.to_thread

from shipml.adapters.prediction_store import PredictionRow, StoreFull, StoreWriter
from shipml.core.ids import Uuid7Generator
from shipml.core.predictor import Outputs
from shipml.core.records import Accepted, FieldError
from shipml.server.metrics import ServerMetrics
from shipml.server.model_manager import Deployment

# Batches are validated, predicted and logged this many records at a time (see PredictionService.run).
CHUNK_ROWS = 2048


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


class PredictionTimeout(TimeoutError):
    """The model did not answer within ``serve.request_timeout_s`` (a 504)."""


class PredictionService:
    """Runs records through a Deployment and the prediction log."""

    def __init__(
        self, writer: StoreWriter | None, durability: str, metrics: ServerMetrics, timeout_s: float = 30.0
    ) -> None:
        self.writer = writer
        self.durability = durability
        self.metrics = metrics
        self.timeout_s = timeout_s
        self.ids = Uuid7Generator()

    async def run(self, deployment: Deployment, records: Sequence[object]) -> list[RecordResult]:
        """Each record's result, in order. Big batches go through in chunks, each chunk handed to the
        log writer as soon as it is predicted, so the writer commits one chunk while the next is
        validated and predicted; in ``commit`` durability the answer waits for every chunk's commit."""
        started = time.perf_counter()
        results: dict[int, RecordResult] = {}
        name, version, variant = deployment.name, deployment.version, deployment.variant
        if self.writer is not None and not self.writer.has_room(len(records)):  # refuse before logging any of it
            self.metrics.shed.inc()
            raise StoreFull("the prediction log queue is full")
        waits = []
        n_ok = 0
        for lo in range(0, len(records), CHUNK_ROWS):
            accepted: list[tuple[int, Accepted]] = []
            for i, record in enumerate(records[lo : lo + CHUNK_ROWS], lo):
                checked = deployment.validator.check(record, i)
                if isinstance(checked, Accepted):
                    accepted.append((i, checked))
                else:
                    results[i] = RecordResult(i, errors=tuple(checked))
            if not accepted:
                continue
            outputs = await self._predict(deployment, [a.values for _, a in accepted])
            latency_ms = (time.perf_counter() - started) * 1000.0
            waits.append(self._log(self._results(deployment, accepted, outputs, results, latency_ms)))
            n_ok += len(accepted)
            for _, a in accepted:
                for feature, rule in a.tolerated:
                    self.metrics.tolerated.labels(name, feature, rule).inc()
        for waiting in waits:
            await self._committed(waiting)
        if n_ok:
            self.metrics.child(self.metrics.predictions, name, version, variant, "ok").inc(n_ok)
        if len(results) > n_ok:
            self.metrics.predictions.labels(name, version, variant, "invalid").inc(len(results) - n_ok)
        return [results[i] for i in range(len(records))]

    async def _predict(self, deployment: Deployment, rows: list[dict[str, Any]]) -> Outputs:
        predictor, batcher = deployment.bundle.predictor, deployment.batcher
        if batcher is None and len(rows) <= predictor.inline_max_rows:
            return predictor.predict(rows)  # a fast predictor: ~0.01 ms, cheaper than a hop to a worker thread
        try:
            with anyio.fail_after(self.timeout_s):
                if batcher is not None and len(rows) < batcher.max_batch_size:
                    return await batcher.predict(rows)  # grouped with concurrent requests, one call
                # a call that hangs is abandoned (its thread finishes on its own), not waited for
                return await anyio.to_thread.run_sync(predictor.predict, rows, abandon_on_cancel=True)
        except TimeoutError:
            raise PredictionTimeout(f"the model did not answer within {self.timeout_s:g} s") from None

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
        name, version, variant = deployment.name, deployment.version, deployment.variant
        ids = self.ids.strings(len(accepted))
        if outputs.proba is not None:
            keys = [str(c) for c in outputs.classes]
            classes = outputs.classes
            # Python lists, not numpy scalars, per row; the label is the first most probable class, as argmax's
            for k, ((i, a), p) in enumerate(zip(accepted, outputs.proba.tolist(), strict=True)):
                proba = dict(zip(keys, p, strict=True))
                label = classes[p.index(max(p))]
                results[i] = RecordResult(i, ids[k], label, proba)
                logged: dict[str, Any] = {"predicted_class": label, "probabilities": proba}
                rows.append(PredictionRow(ids[k], now, name, version, variant, a.values, logged, latency_ms))
        else:
            assert outputs.values is not None  # noqa: S101 - regression
            for k, ((i, a), value) in enumerate(zip(accepted, outputs.values.tolist(), strict=True)):
                results[i] = RecordResult(i, ids[k], value=value)
                rows.append(PredictionRow(ids[k], now, name, version, variant, a.values, {"value": value}, latency_ms))
        return rows

    def _log(self, rows: list[PredictionRow]) -> asyncio.Future[None] | None:
        """Hand rows to the writer: the future of their commit (``commit`` durability) or None."""
        if self.writer is None:
            return None
        try:
            if self.durability != "commit":
                self.writer.enqueue(rows)
                return None
            return self.writer.submit_waitable(rows)
        except StoreFull:
            self.metrics.shed.inc()
            raise

    async def _committed(self, waiting: asyncio.Future[None] | None) -> None:
        """Wait for a commit; a failed one raises StoreError (a 503: the prediction was not logged)."""
        if waiting is not None:
            await waiting
