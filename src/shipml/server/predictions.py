"""Validate, predict and log a list of records: the one path every protocol goes through."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from math import isfinite
from typing import Any

import anyio
import anyio.to_thread
import numpy as np
import structlog

from shipml.adapters.store import PredictionBatch, PredictionRow, StoreFull, StoreWriter
from shipml.core.ids import Uuid7Generator
from shipml.core.predictor import Outputs
from shipml.core.records import Accepted, FieldError
from shipml.core.routing import shadow_sampled
from shipml.server import shadows
from shipml.server.metrics import ServerMetrics
from shipml.server.model_manager import Deployment, Variant

log = structlog.get_logger("shipml.server")

# Batches are validated, predicted and logged this many records at a time (see PredictionService.run).
CHUNK_ROWS = 2048
# A chunk with at least this many predictions is logged as one PredictionBatch (one row of columns in the
# store) rather than a row per record: at 10,000 rows the per-row log cost more than the prediction.
BATCH_LOG_MIN_ROWS = 64


@dataclass(slots=True)
class RecordResult:
    """One record's answer: an id and outputs, or the errors that refused it. (Not frozen: a frozen
    dataclass's ``__init__`` costs three times as much, and a 10,000-row batch makes 10,000 of these.)"""

    index: int
    prediction_id: str | None = None
    label: Any = None
    probabilities: dict[str, float] | None = None
    value: float | None = None
    errors: tuple[FieldError, ...] = ()
    code: str = "validation_error"  # why it was refused: validation_error, or model_output_invalid
    # In an experiment (serve.variants): who answered and how the request was routed ("key" or "random")
    variant: str | None = None
    version: str | None = None
    routed_by: str | None = None

    @property
    def ok(self) -> bool:
        return not self.errors

    def body(self) -> dict[str, Any]:
        if self.errors:
            return {"index": self.index, "error": {"code": self.code, "details": [e.to_dict() for e in self.errors]}}
        out: dict[str, Any] = {"index": self.index, "prediction_id": self.prediction_id}
        if self.probabilities is not None:
            out["predicted_class"] = self.label
            out["probabilities"] = self.probabilities
        else:
            out["value"] = self.value
        if self.variant is not None:
            out.update(variant=self.variant, version=self.version, routed_by=self.routed_by)
        return out


class PredictionTimeout(TimeoutError):
    """The model did not answer within ``serve.request_timeout_s`` (a 504)."""


class PredictionService:
    """Runs records through a Variant and the prediction log."""

    def __init__(
        self,
        writer: StoreWriter | None,
        durability: str,
        metrics: ServerMetrics,
        timeout_s: float = 30.0,
        shadow_timeout_s: float = 2.0,
        *,
        shadow_queue_rows: int = shadows.QUEUE_ROWS,
    ) -> None:
        self.writer = writer
        self.durability = durability
        self.metrics = metrics
        self.timeout_s = timeout_s
        self.ids = Uuid7Generator()
        self.rng = random.Random()  # noqa: S311 - routing of requests without a key: uniform, not secret
        self.shadow_timeout_s = shadow_timeout_s
        # each shadow's sampled copies wait in a bounded queue, scored in batches by one task (server/shadows.py)
        self.shadows = shadows.Shadows(self._run_shadow, self._shadow_dropped, max_rows=shadow_queue_rows)

    async def run_routed(
        self, deployment: Deployment, records: Sequence[object], keys: Sequence[str | None]
    ) -> list[RecordResult]:
        """Route each record by its key (``keys[i]``; None: a random draw) to a variant of ``deployment``, run
        each variant's records, and return the results in order, each saying who answered and how it was
        routed. The shadows score their sampled records afterwards, off the response path."""
        logged_keys = keys if any(k is not None for k in keys) else None
        if deployment.split is None:
            results = await self.run(deployment.primary, records, logged_keys)
        else:
            results = await self._split_run(deployment, records, keys)
        if deployment.shadows:
            self._shadow(deployment, records, keys)
        return results

    async def _split_run(
        self, deployment: Deployment, records: Sequence[object], keys: Sequence[str | None]
    ) -> list[RecordResult]:
        groups: dict[str, tuple[Variant, list[int], list[str]]] = {}
        for i, key in enumerate(keys):
            variant, assignment = deployment.route(key, self.rng)
            group = groups.setdefault(variant.variant, (variant, [], []))
            group[1].append(i)
            group[2].append("key" if assignment is not None and assignment.keyed else "random")
        out: list[RecordResult | None] = [None] * len(records)
        for variant, positions, routed in groups.values():
            answered = await self.run(variant, [records[i] for i in positions], [keys[i] for i in positions])
            for local, result in enumerate(answered):
                at = positions[local]
                result.index = at
                if result.errors:
                    result.errors = tuple(replace(e, record=at) for e in result.errors)
                result.variant, result.version, result.routed_by = variant.variant, variant.version, routed[local]
                out[at] = result
        return [r for r in out if r is not None]

    def _shadow(self, deployment: Deployment, records: Sequence[object], keys: Sequence[str | None]) -> None:
        """Queue each shadow's sampled copies of the request (never awaited: see server/shadows.py)."""
        for variant, shadow in deployment.shadows:
            if shadow.fraction >= 1.0:  # every record (as shadow_sampled says, without a hash per key)
                self.shadows.put(variant, list(records), list(keys))
                continue
            picked = [i for i, key in enumerate(keys) if shadow_sampled(key, shadow, deployment.salt, self.rng)]
            if picked:
                self.shadows.put(variant, [records[i] for i in picked], [keys[i] for i in picked])

    async def _run_shadow(self, variant: Variant, records: list[object], keys: list[str | None]) -> None:
        """A batch of a shadow's copies, scored and logged, never answered: any failure is counted and logged,
        never seen by a client. A prediction log without room for the batch drops it (counted) rather than
        take the room of clients' predictions."""
        try:
            await self._score_shadow(variant, records, keys)
        except StoreFull:
            self._shadow_dropped(variant, len(records))
        except Exception as exc:  # noqa: BLE001 - a shadow must never fail a request, whatever goes wrong
            self.metrics.child(self.metrics.shadow_failures, variant.name, variant.version, variant.variant).inc()
            log.warning("shadow_failed", variant=variant.variant, records=len(records), error=type(exc).__name__)

    async def _score_shadow(self, variant: Variant, records: list[object], keys: list[str | None]) -> None:
        """Validate, predict and log a batch of a shadow's copies as ``run`` does a request (rows with role shadow
        and their routing keys; refused records, NaN outputs and a failed or timed-out model call logged and
        counted with their status), with three differences. The work goes in steps of a fraction of a
        millisecond ``shadows.PACE_S`` apart, so a request in flight meanwhile waits for one step at most; the
        rows' latency is the batch's work, without those pauses. The model call is abandoned after
        ``serve.shadow_timeout_s``. The rows are logged in ``async`` durability whatever the service's: nobody
        waits for a shadow row's commit (room for the whole batch is reserved first, StoreFull if there is none).
        """
        steps = shadows.Steps()
        logged = 0

        def to_log(unit: list[PredictionRow] | PredictionBatch) -> None:
            nonlocal logged
            if self.writer is not None and len(unit):
                self.writer.enqueue(unit, reserved=True)
                logged += len(unit)

        results: dict[int, RecordResult] = {}
        accepted: list[tuple[int, Accepted]] = []
        if self.writer is not None:
            self.writer.reserve(len(records))
        try:
            for lo in range(0, len(records), shadows.SLICE_ROWS):
                accepted += self._validate(variant, records[: lo + shadows.SLICE_ROWS], lo, results)
                await steps.pause()
            if results:
                to_log(self._refused_rows(variant, records, 0, results, keys))
            if accepted:
                await self._shadow_answers(variant, accepted, results, keys, steps, to_log)
        finally:
            if self.writer is not None:
                self.writer.release(len(records) - logged)
        self._count(variant, results.values())
        m = self.metrics
        m.child(m.variant_latency, variant.name, variant.variant).observe(steps.busy_s())

    async def _shadow_answers(
        self,
        variant: Variant,
        accepted: list[tuple[int, Accepted]],
        results: dict[int, RecordResult],
        keys: list[str | None],
        steps: shadows.Steps,
        to_log: Callable[[list[PredictionRow] | PredictionBatch], None],
    ) -> None:
        """Predict a batch's accepted records and log their answers: a PredictionBatch per slice, one step each."""
        try:
            outputs = await self._shadow_predict(variant, [a.values for _, a in accepted])
        except Exception as exc:
            to_log(self._failed_rows(variant, accepted, steps.started + steps.paused, keys, exc))
            raise
        await steps.pause()
        latency_ms = steps.busy_s() * 1000.0
        if not variant.schema_sha256:  # no store catalog: rows, not batches of columns
            to_log(self._results(variant, accepted, outputs, results, latency_ms, keys))
            return
        for lo in range(0, len(accepted), shadows.SLICE_ROWS):
            if lo:
                await steps.pause()
            hi = lo + shadows.SLICE_ROWS
            proba, values = outputs.proba, outputs.values
            part = Outputs(
                outputs.classes, None if proba is None else proba[lo:hi], None if values is None else values[lo:hi]
            )
            batch, invalid = self._batch(variant, accepted[lo:hi], part, results, latency_ms, keys)
            to_log(batch)
            to_log(invalid)

    async def _shadow_predict(self, variant: Variant, rows: list[dict[str, Any]]) -> Outputs:
        """``_predict``, abandoned after ``serve.shadow_timeout_s`` (PredictionTimeout)."""
        try:
            with anyio.fail_after(self.shadow_timeout_s):
                return await self._predict(variant, rows)
        except PredictionTimeout:
            raise
        except TimeoutError:
            raise PredictionTimeout(f"the shadow did not answer within {self.shadow_timeout_s:g} s") from None

    def _shadow_dropped(self, variant: Variant, n_records: int) -> None:
        self.metrics.child(self.metrics.shadow_dropped, variant.name, variant.variant).inc(n_records)

    async def close(self) -> None:
        """Stop the shadows: their queued copies are scored within ``serve.shadow_timeout_s``, the rest dropped
        (counted). Call before the log's writer closes."""
        await self.shadows.close(self.shadow_timeout_s)

    async def run(
        self, deployment: Variant, records: Sequence[object], keys: Sequence[str | None] | None = None
    ) -> list[RecordResult]:
        """Each record's result, in order. Big batches go through in chunks, each chunk handed to the
        log writer as soon as it is predicted, so the writer commits one chunk while the next is
        validated and predicted; in ``commit`` durability the answer waits for every chunk's commit.

        Room in the log's queue is reserved for the whole batch before anything is logged: a batch is
        refused whole (StoreFull, a 503) or logged whole, never answered 503 after part of it was logged.
        ``keys``: each record's routing key, logged with its row (None: no keys).
        """
        started = time.perf_counter()
        results: dict[int, RecordResult] = {}
        self._reserve(len(records))
        waits = []
        logged = 0
        try:
            for lo in range(0, len(records), CHUNK_ROWS):
                answered = len(results)  # every record of the earlier chunks
                accepted = self._validate(deployment, records, lo, results)
                refused = len(results) > answered
                rows = self._refused_rows(deployment, records, lo, results, keys) if refused else []
                if accepted:
                    try:
                        outputs = await self._predict(deployment, [a.values for _, a in accepted])
                    except Exception as exc:
                        # the client gets a 5xx; the variant's failure is counted and logged (status "error"),
                        # so an experiment or a canary sees it in the variant's error rate
                        rows += self._failed_rows(deployment, accepted, started, keys, exc)
                        waits.append(self._log(rows))
                        logged += len(rows)
                        raise
                    latency_ms = (time.perf_counter() - started) * 1000.0
                    if len(accepted) >= BATCH_LOG_MIN_ROWS and deployment.schema_sha256:
                        batch, invalid = self._batch(deployment, accepted, outputs, results, latency_ms, keys)
                        rows += invalid
                        waits.append(self._log(batch))
                        logged += len(batch)
                    else:
                        rows += self._results(deployment, accepted, outputs, results, latency_ms, keys)
                if rows:
                    waits.append(self._log(rows))
                    logged += len(rows)
        finally:
            if self.writer is not None:
                self.writer.release(len(records) - logged)  # room of refused records, or of a failed call
        for waiting in waits:
            await self._committed(waiting)
        self._count(deployment, results.values())
        m = self.metrics
        m.child(m.variant_latency, deployment.name, deployment.variant).observe(time.perf_counter() - started)
        return [results[i] for i in range(len(records))]

    def _failed_rows(
        self,
        deployment: Variant,
        accepted: list[tuple[int, Accepted]],
        started: float,
        keys: Sequence[str | None] | None,
        exc: BaseException,
    ) -> list[PredictionRow]:
        """Rows (status "error") of records whose model call raised or timed out, counted per variant."""
        d, m = deployment, self.metrics
        m.child(m.predictions, d.name, d.version, d.variant, "error").inc(len(accepted))
        now, latency_ms = time.time(), (time.perf_counter() - started) * 1000.0
        ids = self.ids.strings(len(accepted))
        outputs = {"error": "timeout" if isinstance(exc, PredictionTimeout) else "model_error"}
        return [
            PredictionRow(ids[k], now, d.name, d.version, d.variant, a.values, outputs, latency_ms, d.role,
                          keys[i] if keys is not None else None, status="error")
            for k, (i, a) in enumerate(accepted)
        ]  # fmt: skip

    def _reserve(self, n_rows: int) -> None:
        if self.writer is None:
            return
        try:
            self.writer.reserve(n_rows)
        except StoreFull:
            self.metrics.shed.inc()
            raise

    def _validate(
        self, deployment: Variant, records: Sequence[object], lo: int, results: dict[int, RecordResult]
    ) -> list[tuple[int, Accepted]]:
        """The accepted records of the chunk starting at ``lo``; the refused ones go into ``results``."""
        chunk = records[lo : lo + CHUNK_ROWS]
        if len(chunk) >= BATCH_LOG_MIN_ROWS and deployment.validator.all_clean(chunk):
            return [(i, Accepted(record)) for i, record in enumerate(chunk, lo)]  # type: ignore[arg-type]
        accepted: list[tuple[int, Accepted]] = []
        for i, record in enumerate(chunk, lo):
            checked = deployment.validator.check(record, i)
            if isinstance(checked, Accepted):
                accepted.append((i, checked))
                for feature, rule in checked.tolerated:
                    self.metrics.tolerated.labels(deployment.name, feature, rule).inc()
            else:
                results[i] = RecordResult(i, errors=tuple(checked))
        return accepted

    def _refused_rows(
        self,
        deployment: Variant,
        records: Sequence[object],
        lo: int,
        results: dict[int, RecordResult],
        keys: Sequence[str | None] | None,
    ) -> list[PredictionRow]:
        """Log rows of the chunk's refused records (status "invalid"): the log holds every record answered.
        Their values may not fit the schema, so they are kept as JSON only, never in typed slots."""
        refused = [i for i in range(lo, min(lo + CHUNK_ROWS, len(records))) if i in results]
        if not refused:
            return []
        now, ids = time.time(), self.ids.strings(len(refused))
        name, version, variant = deployment.name, deployment.version, deployment.variant
        rows = []
        for k, i in enumerate(refused):
            record = records[i]
            features = record if isinstance(record, dict) else {"_record": record}
            errors = {"errors": [e.to_dict() for e in results[i].errors]}
            key = keys[i] if keys is not None else None
            rows.append(
                PredictionRow(ids[k], now, name, version, variant, features, errors, 0.0, deployment.role, key,
                              status="invalid")
            )  # fmt: skip
        return rows

    def _count(self, deployment: Variant, answered: Collection[RecordResult]) -> None:
        m, name, version, variant = self.metrics, deployment.name, deployment.version, deployment.variant
        if all(r.ok for r in answered):  # the usual case, in one pass and one increment
            if answered:
                m.child(m.predictions, name, version, variant, "ok").inc(len(answered))
            return
        for status, n in Counter(_status(r) for r in answered).items():
            m.child(m.predictions, name, version, variant, status).inc(n)

    async def _predict(self, deployment: Variant, rows: list[dict[str, Any]]) -> Outputs:
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
        deployment: Variant,
        accepted: list[tuple[int, Accepted]],
        outputs: Outputs,
        results: dict[int, RecordResult],
        latency_ms: float,
        keys: Sequence[str | None] | None = None,
    ) -> list[PredictionRow]:
        now = time.time()
        role = deployment.role
        rows = []
        name, version, variant, sha = deployment.name, deployment.version, deployment.variant, deployment.schema_sha256
        ids = self.ids.strings(len(accepted))
        if outputs.proba is not None:
            class_names = [str(c) for c in outputs.classes]
            classes = outputs.classes
            # Python lists, not numpy scalars, per row; the label is the first most probable class, as argmax's
            for k, ((i, a), p) in enumerate(zip(accepted, outputs.proba.tolist(), strict=True)):
                if not isfinite(sum(p)):  # NaN or an infinity anywhere in the row (cheaper than numpy per row)
                    rows.append(self._output_invalid(deployment, ids[k], now, i, a, results, latency_ms, keys))
                    continue
                proba = dict(zip(class_names, p, strict=True))
                label = classes[p.index(max(p))]
                results[i] = RecordResult(i, ids[k], label, proba)
                logged: dict[str, Any] = {"predicted_class": label, "probabilities": proba}
                rows.append(
                    PredictionRow(
                        ids[k],
                        now,
                        name,
                        version,
                        variant,
                        a.values,
                        logged,
                        latency_ms,
                        role,
                        keys[i] if keys is not None else None,
                        schema_sha256=sha,
                    )
                )
        else:
            assert outputs.values is not None  # noqa: S101 - regression
            for k, ((i, a), value) in enumerate(zip(accepted, outputs.values.tolist(), strict=True)):
                if not isfinite(value):
                    rows.append(self._output_invalid(deployment, ids[k], now, i, a, results, latency_ms, keys))
                    continue
                results[i] = RecordResult(i, ids[k], value=value)
                rows.append(
                    PredictionRow(
                        ids[k],
                        now,
                        name,
                        version,
                        variant,
                        a.values,
                        {"value": value},
                        latency_ms,
                        role,
                        keys[i] if keys is not None else None,
                        schema_sha256=sha,
                    )
                )
        return rows

    def _batch(
        self,
        deployment: Variant,
        accepted: list[tuple[int, Accepted]],
        outputs: Outputs,
        results: dict[int, RecordResult],
        latency_ms: float,
        keys: Sequence[str | None] | None = None,
    ) -> tuple[PredictionBatch, list[PredictionRow]]:
        """The results of a chunk's accepted records, logged as one PredictionBatch of the "ok" ones; the
        records the model answered with NaN or inf are rows of their own (status "output_invalid")."""
        now = time.time()
        d = deployment
        ids = self.ids.strings(len(accepted))
        ok_ids: list[str] = []
        features: list[dict[str, Any]] = []
        invalid: list[PredictionRow] = []
        if outputs.proba is not None and np.isfinite(outputs.proba).all():  # the usual case, without a check per row
            classes_text = [str(c) for c in outputs.classes]
            probas = outputs.proba.tolist()
            labels = [outputs.classes[j] for j in np.argmax(outputs.proba, axis=1).tolist()]  # the first best
            for k, (i, _) in enumerate(accepted):
                results[i] = RecordResult(i, ids[k], labels[k], dict(zip(classes_text, probas[k], strict=True)))
            batch = PredictionBatch(
                ids, now, d.name, d.version, d.variant, d.schema_sha256, [a.values for _, a in accepted], latency_ms,
                labels=labels, classes=classes_text, proba=probas, role=d.role,
                routing_keys=[keys[i] for i, _ in accepted] if keys is not None else None,
            )  # fmt: skip
            return batch, invalid
        ok_keys: list[str | None] = []
        if outputs.proba is not None:
            classes_text = [str(c) for c in outputs.classes]
            classes = outputs.classes
            labels = []
            probas = []
            for k, ((i, a), p) in enumerate(zip(accepted, outputs.proba.tolist(), strict=True)):
                if not isfinite(sum(p)):
                    invalid.append(self._output_invalid(d, ids[k], now, i, a, results, latency_ms, keys))
                    continue
                label = classes[p.index(max(p))]
                results[i] = RecordResult(i, ids[k], label, dict(zip(classes_text, p, strict=True)))
                ok_ids.append(ids[k])
                ok_keys.append(keys[i] if keys is not None else None)
                features.append(a.values)
                labels.append(label)
                probas.append(p)
            batch = PredictionBatch(
                ok_ids, now, d.name, d.version, d.variant, d.schema_sha256, features, latency_ms,
                labels=labels, classes=classes_text, proba=probas, role=d.role,
                routing_keys=ok_keys if keys is not None else None,
            )  # fmt: skip
            return batch, invalid
        assert outputs.values is not None  # noqa: S101 - regression
        values: list[float] = []
        for k, ((i, a), value) in enumerate(zip(accepted, outputs.values.tolist(), strict=True)):
            if not isfinite(value):
                invalid.append(self._output_invalid(d, ids[k], now, i, a, results, latency_ms, keys))
                continue
            results[i] = RecordResult(i, ids[k], value=value)
            ok_ids.append(ids[k])
            ok_keys.append(keys[i] if keys is not None else None)
            features.append(a.values)
            values.append(value)
        batch = PredictionBatch(
            ok_ids, now, d.name, d.version, d.variant, d.schema_sha256, features, latency_ms, values=values,
            role=d.role, routing_keys=ok_keys if keys is not None else None,
        )  # fmt: skip
        return batch, invalid

    def _output_invalid(
        self,
        deployment: Variant,
        prediction_id: str,
        now: float,
        i: int,
        accepted: Accepted,
        results: dict[int, RecordResult],
        latency_ms: float,
        keys: Sequence[str | None] | None = None,
    ) -> PredictionRow:
        """A record the model answered with NaN or an infinity: refused with its own code, logged, counted."""
        error = FieldError(i, "", "model_output_invalid", "the model's output for this record is not a finite number")
        results[i] = RecordResult(i, errors=(error,), code="model_output_invalid")
        m = self.metrics
        m.child(m.output_invalid, deployment.name, deployment.version, deployment.variant).inc()
        d = deployment
        outputs = {"errors": [error.to_dict()]}
        return PredictionRow(
            prediction_id,
            now,
            d.name,
            d.version,
            d.variant,
            accepted.values,
            outputs,
            latency_ms,
            d.role,
            keys[i] if keys is not None else None,
            schema_sha256=d.schema_sha256,
            status="output_invalid",
        )

    def _log(self, rows: list[PredictionRow] | PredictionBatch) -> asyncio.Future[None] | None:
        """Hand rows to the writer: the future of their commit (``commit`` durability) or None."""
        if self.writer is None:
            return None
        if self.durability != "commit":
            self.writer.enqueue(rows, reserved=True)
            return None
        return self.writer.submit_waitable(rows, reserved=True)

    async def _committed(self, waiting: asyncio.Future[None] | None) -> None:
        """Wait for a commit; a failed one raises StoreError (a 503: the prediction was not logged)."""
        if waiting is not None:
            await waiting


def _status(result: RecordResult) -> str:
    """The ``status`` label of a record's answer in the predictions counter (and its log row)."""
    if result.ok:
        return "ok"
    return "invalid" if result.code == "validation_error" else "output_invalid"
