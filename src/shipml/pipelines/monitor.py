"""The monitoring job: drift and performance of a model over a window, from the store, as a stored DriftReport.

Drift reads the per-minute histograms the store writer keeps (a verdict over any window is a sum of small
arrays), and counts the window's newest minutes, which the writers may not have written yet, from the raw rows;
``recompute`` first rebuilds the settled minutes from the raw rows. Realised performance joins the feedback to
the predictions that are old enough to have it (``monitor.label_delay_s``); estimated performance comes
from the probabilities, recalibrated by the map recorded at training, when the holdout's calibration error
after that map allows. The multivariate check (a domain classifier) reads a sample of the window's newest raw
rows and the version's registered reference sample.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shipml.adapters.registry import MlflowRegistry, ModelRef
from shipml.adapters.store import FeatureWindow, PredictionStore
from shipml.adapters.store.histogram_table import MinuteCounts, Recount
from shipml.adapters.store.histograms import HistogramLayout
from shipml.config import MonitorSettings
from shipml.core.binning import PREDICTION, ProfileBinnings, counts_of
from shipml.core.calibration import Recalibration
from shipml.core.domain_drift import domain_classifier_drift
from shipml.core.drift import DriftThresholds, FeatureDrift, drift_of, feature_drift, worst
from shipml.core.metrics import LOWER_IS_BETTER
from shipml.core.monitor_report import Distribution, DriftReport, PerformanceEntry, SegmentReport, SeriesPoint
from shipml.core.performance import (
    PerformanceEstimate,
    PerformanceOptions,
    estimated_performance,
    performance_drop,
    realised_performance,
)
from shipml.core.prediction import Truth, positive_from_score
from shipml.core.window import Window
from shipml.pipelines.alerts import notify_change
from shipml.pipelines.bundle import REFERENCE_SAMPLE_ARTIFACT, ModelBundle, load_bundle
from shipml.pipelines.workspace import Workspace

SERIES_SLICES = 24  # the report's "over time": the window cut in at most this many slices
PERFORMANCE_SLICES = 12
DOMAIN_SAMPLE_S = 3600.0  # the multivariate check reads the window's newest hour of raw rows


def thresholds_of(settings: MonitorSettings) -> DriftThresholds:
    return DriftThresholds(**settings.drift.model_dump())


@dataclass(frozen=True)
class Version:
    """What the job needs of a registered version (loaded once per run)."""

    bundle: ModelBundle
    binnings: ProfileBinnings | None
    layout: HistogramLayout | None
    positive: str | None

    @property
    def task(self) -> str:
        return self.bundle.schema.target.task

    def positive_scores(self, score: np.ndarray) -> np.ndarray:
        """The store's ``score`` as the positive class's probability, what the profile binned (a binary
        classifier's; any other's scores as they are)."""
        if self.task != "binary":
            return score
        return positive_from_score(score, [str(c) for c in self.bundle.classes], self.positive)


class MonitorJob:
    """Runs the checks of one model over a window and stores the report."""

    def __init__(
        self, settings: MonitorSettings, store: PredictionStore, registry: MlflowRegistry, cache_dir: Path
    ) -> None:
        self.settings = settings
        self.store = store
        self.registry = registry
        self.cache_dir = cache_dir
        self.thresholds = thresholds_of(settings)
        self._versions: dict[tuple[str, str], Version] = {}

    @classmethod
    def of(cls, ws: Workspace) -> MonitorJob:
        """The job over ``ws``'s store and registry, with its monitor settings."""
        return cls(ws.settings.monitor, ws.store, ws.registry, ws.cache_dir)

    def version(self, model: str, version: str) -> Version:
        key = (model, version)
        found = self._versions.get(key)
        if found is None:
            bundle = load_bundle(self.registry, ModelRef(model, version=version), self.cache_dir, fast_path=False)
            positive = bundle.evaluation.get("positive_class")
            positive = None if positive is None else str(positive)
            binnings = layout = None
            if bundle.profile is not None:
                binnings = ProfileBinnings.of(bundle.profile)
                layout = HistogramLayout.of(bundle.profile, bundle.schema.target.task, positive)
            found = self._versions[key] = Version(bundle, binnings, layout, positive)
        return found

    def run(
        self, model: str, window: Window, *, recompute: bool = False, save: bool = True
    ) -> tuple[DriftReport, int | None]:
        """The report of ``model`` over ``window`` (stored unless ``save`` is False) and its id in the store.

        Drift reads the settled minutes from the histograms and counts the rest of the window from the raw rows
        (the minutes live keepers may not have written yet), so that drift and performance judge the same rows."""
        now = time.time()
        if recompute:
            self.recompute(model, window, now=now)
        settled = self.store.histograms.settled_before(now)
        minutes = self.store.histograms.read(model, window.since, min(window.until, settled))
        if window.until > settled:
            tail = self._recount(model, max(window.since, settled), window.until)
            minutes += [MinuteCounts(r.minute, r.version, r.variant, r.rows, r.layout.split(r.counts)) for r in tail]
        by_segment: dict[tuple[str, str], list[MinuteCounts]] = {}
        for m in minutes:
            by_segment.setdefault((m.version, m.variant), []).append(m)
        segments = tuple(
            self._segment(model, version, variant, found, window)
            for (version, variant), found in sorted(by_segment.items())
        )
        report = DriftReport(model, window.since, window.until, time.time(), segments)
        return report, self.store.reports.save(report) if save else None

    def recompute(self, model: str, window: Window, *, now: float | None = None) -> int:
        """Rebuild the window's settled histograms from the raw rows (minutes of versions without a profile are
        dropped; the minutes live keepers still hold are left to them, and a report counts those from the rows
        anyway); how many rows were counted."""
        at = time.time() if now is None else now
        since = math.ceil(window.since / 60) * 60.0  # whole minutes: a part of one would replace all of it
        until = min(window.until, self.store.histograms.settled_before(at))
        if until <= since:
            return 0
        entries = self._recount(model, since, until)
        self.store.histograms.replace(model, since, until, entries, now=at)
        return sum(e.rows for e in entries)

    def _recount(self, model: str, since: float, until: float, *, streamed: bool = True) -> list[Recount]:
        """The per-minute histograms of the raw rows with ``since <= ts < until``, counted as the keepers count
        them (versions without a profile have none), ordered by version, variant and minute. ``streamed``: read
        the rows a chunk at a time (``stream_window``) and add each chunk's counts to the minutes' (integer
        counts: the same as one count of the whole window); else the whole window at once."""
        chunks = (
            self.store.predictions.stream_window(model, since, until, rows_per_chunk=self.settings.recompute_chunk_rows)
            if streamed
            else iter([self.store.predictions.read_window(model, since, until)])
        )
        totals: dict[tuple[str, str, int], tuple[Version, list[Any]]] = {}  # -> (version, [rows, counts])
        for rows in chunks:
            self._fold(model, rows, totals)
        return [
            Recount(minute, version, variant, "primary", v.layout, int(held[0]), held[1])
            for (version, variant, minute), (v, held) in sorted(totals.items())
            if v.layout is not None
        ]

    def _fold(
        self, model: str, rows: FeatureWindow, totals: dict[tuple[str, str, int], tuple[Version, list[Any]]]
    ) -> None:
        """Add the counts of ``rows`` per (version, variant, minute) to ``totals``."""
        if not len(rows):
            return
        minute_of = (rows.ts // 60).astype(np.int64)
        for version in sorted(set(rows.version.tolist())):
            v = self.version(model, version)
            if v.layout is None:
                continue
            of_version = rows.version == version
            for variant in sorted(set(rows.variant[of_version].tolist())):
                segment = of_version & (rows.variant == variant)
                where = np.flatnonzero(segment)
                order = where[np.argsort(minute_of[where], kind="stable")]  # the segment's rows, minute by minute
                minutes, starts = np.unique(minute_of[order], return_index=True)
                for minute, picked in zip(minutes.tolist(), np.split(order, starts[1:]), strict=True):
                    flat = np.concatenate([
                        counts_of(b, self._values_of(v, rows, b.feature, picked)) for b in v.layout.binnings
                    ])  # fmt: skip
                    held = totals.get((version, variant, minute))
                    if held is None:
                        totals[(version, variant, minute)] = (v, [len(picked), flat])
                    else:
                        held[1][0] += len(picked)
                        held[1][1] = held[1][1] + flat

    @staticmethod
    def _values_of(v: Version, rows: FeatureWindow, feature: str, picked: np.ndarray) -> np.ndarray:
        """``feature``'s values (or the prediction's) of the rows at the positions ``picked``."""
        if feature != PREDICTION:
            column = rows.features.get(feature)
            if column is None:
                return np.full(len(picked), np.nan)
            return np.asarray(column[picked])
        if v.task == "multiclass":
            return np.asarray(rows.label[picked])
        return v.positive_scores(rows.score[picked])

    def _segment(
        self, model: str, version: str, variant: str, minutes: list[MinuteCounts], window: Window
    ) -> SegmentReport:
        v = self.version(model, version)
        rows = sum(m.rows for m in minutes)
        if v.binnings is None:
            return SegmentReport(
                version, variant, rows, "not_enough_data", (), notes=("the version has no reference profile",)
            )
        total = _summed(minutes, v.binnings)
        drift = list(feature_drift(v.binnings, total, self.thresholds).results)
        notes: list[str] = []
        multivariate = self._multivariate(model, version, variant, v, window, notes)
        if multivariate is not None:
            drift.append(multivariate)
        verdicts = [d.verdict for d in drift if d.decisive]
        performance, performance_series, labels = self._performance(model, version, variant, v, window, notes)
        return SegmentReport(
            version=version,
            variant=variant,
            rows=rows,
            verdict=worst(verdicts) if verdicts else "not_enough_data",
            drift=tuple(drift),
            distributions=tuple(
                Distribution(
                    name, b.kind, b.labels, tuple(float(x) for x in b.reference), tuple(int(c) for c in total[name])
                )
                for name, b in v.binnings.all.items()
            ),
            series=self._series(minutes, v.binnings, window),
            performance=performance,
            performance_series=performance_series,
            labels=labels,
            notes=tuple(notes),
        )

    def _series(
        self, minutes: list[MinuteCounts], binnings: ProfileBinnings, window: Window
    ) -> tuple[SeriesPoint, ...]:
        """Per slice of the window, each feature's first statistic (its effect size) with its verdict, judged as the
        whole window is (gated by the slice's own two-sample test)."""
        n = max(1, min(SERIES_SLICES, math.ceil((window.until - window.since) / 60)))
        points = []
        for start, end in window.slices(n):
            inside = [m for m in minutes if start <= m.minute * 60 < end]
            counts = _summed(inside, binnings)
            for name, b in binnings.all.items():
                first = drift_of(b, counts[name], self.thresholds)[0]
                points.append(SeriesPoint(start, end, name, first.statistic, first.value, first.rows, first.verdict))
        return tuple(points)

    def _multivariate(
        self, model: str, version: str, variant: str, v: Version, window: Window, notes: list[str]
    ) -> FeatureDrift | None:
        if not self.settings.multivariate:
            return None
        sample_file = v.bundle.loaded.local_dir / REFERENCE_SAMPLE_ARTIFACT
        if not sample_file.is_file():
            notes.append(
                "multivariate check skipped: the version has no registered reference sample (trained before it)"
            )
            return None
        reference = pd.read_json(sample_file, orient="split")
        since = max(window.since, window.until - DOMAIN_SAMPLE_S)
        current = self.store.predictions.read_window(model, since, window.until, version=version, variant=variant)
        names = [n for n in v.bundle.schema.names if n in current.features and n in reference.columns]
        if len(current) < self.thresholds.min_rows or not names:
            notes.append(
                f"multivariate check skipped: {len(current)} rows in the window's newest hour, under {self.thresholds.min_rows}"
            )
            return None
        categorical = [n for n in names if current.kinds.get(n) != "numeric"]
        return domain_classifier_drift(
            {n: reference[n].to_numpy() for n in names},
            {n: current.features[n] for n in names},
            self.thresholds,
            categorical=categorical,
        )

    def _performance(
        self, model: str, version: str, variant: str, v: Version, window: Window, notes: list[str]
    ) -> tuple[tuple[PerformanceEntry, ...], tuple[PerformanceEntry, ...], dict[str, int]]:
        found = self.store.predictions.read_outcomes(
            model, window.since, window.until, version=version, variant=variant
        )
        ids, ts, label, score = found.ids, found.ts, found.label, found.score
        feedback = self.store.feedback.read(ids.tolist())  # the window's feedback only
        regression = v.task == "regression"
        has = np.array([(t := feedback.get(i)) is not None and t.holds(regression) for i in ids.tolist()], dtype=bool)
        matured = ts <= time.time() - self.settings.label_delay_s
        labelled = matured & has
        labels = {"pending": int((~has).sum()), "matured": int(matured.sum()), "labelled": int(labelled.sum())}
        holdout = v.bundle.evaluation.get("holdout", {})
        whole = self._estimates(v, ids, label, score, feedback, labelled, np.ones(len(ids), dtype=bool), holdout)
        series: list[PerformanceEntry] = []
        if len(ids):
            for start, end in window.slices(PERFORMANCE_SLICES):
                inside = (ts >= start) & (ts < end)
                if inside.any():
                    for e in self._estimates(v, ids, label, score, feedback, labelled & inside, inside, holdout):
                        series.append(PerformanceEntry(e.estimate, e.holdout, e.dropped, e.reason, start, end))
        if v.task != "regression" and holdout.get("calibration_error") is None:
            notes.append("estimated performance refused: the version has no recorded holdout calibration error")
        elif v.task != "regression" and Recalibration.from_dict(v.bundle.evaluation.get("recalibration")) is None:
            notes.append(
                "estimated performance reads the raw probabilities, gated by their holdout calibration error: the "
                "version was trained before shipml recorded a recalibration of its scores (or its holdout had too "
                "few rows of an outcome to fit one)"
            )
        return whole, tuple(series), labels

    def _estimates(
        self,
        v: Version,
        ids: np.ndarray,
        label: np.ndarray,
        score: np.ndarray,
        feedback: dict[str, Truth],
        labelled: np.ndarray,
        rows: np.ndarray,
        holdout: dict[str, Any],
    ) -> tuple[PerformanceEntry, ...]:
        s = self.settings
        opts = PerformanceOptions(min_count=s.min_labelled, max_calibration_error=s.max_calibration_error)
        task = v.task
        estimates: list[PerformanceEstimate] = []
        picked = ids[labelled].tolist()
        if task == "regression":
            truth = np.array([feedback[i].value for i in picked], dtype=np.float64)
            estimates += realised_performance("regression", truth, score[labelled], options=opts)
        else:
            truth = np.array([feedback[i].label for i in picked], dtype=object).astype(str)
            predicted = label[labelled].astype(str)
            positive_score = v.positive_scores(score[labelled]) if task == "binary" else None
            estimates += realised_performance(task, truth, predicted, positive_score, v.positive, opts)  # type: ignore[arg-type]
            served = v.positive_scores(score[rows]) if task == "binary" else score[rows]
            predicted_positive = (label[rows].astype(str) == v.positive) if task == "binary" else None
            error = holdout.get("calibration_error")
            recalibration = Recalibration.from_dict(v.bundle.evaluation.get("recalibration"))
            if recalibration is not None:  # the scores mapped as the holdout showed, and judged after the map
                served, error = recalibration.apply(served), recalibration.calibration_error
            estimates += estimated_performance(task, served, error, predicted_positive, opts)  # type: ignore[arg-type]
        out = []
        for e in estimates:
            reference = holdout.get(e.metric)
            if reference is None:
                out.append(PerformanceEntry(e, None, False, "no holdout value for this metric"))
                continue
            # absent for a version trained before the holdout's intervals were recorded: judged as exact
            interval = v.bundle.evaluation.get("holdout_intervals", {}).get(e.metric)
            judged = performance_drop(
                e,
                float(reference),
                s.performance_tolerance,
                e.metric in LOWER_IS_BETTER,
                None if interval is None else (float(interval[0]), float(interval[1])),
            )
            out.append(PerformanceEntry(e, float(reference), judged.flagged, judged.reason))
        return tuple(out)


def run_monitoring(
    ws: Workspace, model: str, window: Window, *, recompute: bool = False, job: MonitorJob | None = None
) -> tuple[DriftReport, int | None]:
    """One run of the monitoring job, composed once for the CLI and the service's schedule: the report of ``model``
    over ``window``, stored, then its verdict sent to ``monitor.webhook_url`` when it changed (never raises for
    the webhook); the report and its id. ``job``: a job kept between runs (its loaded versions)."""
    report, report_id = (job or MonitorJob.of(ws)).run(model, window, recompute=recompute)
    notify_change(ws.settings.monitor, ws.store, report, report_id)
    return report, report_id


def _summed(minutes: Sequence[MinuteCounts], binnings: ProfileBinnings) -> dict[str, np.ndarray]:
    """The minutes' counts added up per feature (zeros where a minute lacks one, e.g. another layout)."""
    total = {name: np.zeros(b.buckets, dtype=np.int64) for name, b in binnings.all.items()}
    for m in minutes:
        for name, counts in m.counts.items():
            if name in total and len(counts) == len(total[name]):
                total[name] += counts
    return total
