"""`shipml ab report` and `ab promote`: the variants of an experiment judged from the prediction store.

Each primary variant (``serve.variants``; the first is the champion) is measured on its answered predictions over a
window. The primary metric comes from the feedback of the matured ones (``monitor.label_delay_s``, as in
monitoring): accuracy for a classifier (1 when the predicted label equals the feedback's, else 0), or the negative
absolute error for a regressor (negated so that higher is better for both). Each challenger is compared with the
champion (``core.experiments``: difference and lift with anytime-valid intervals), the split is checked for a sample
ratio mismatch, and ``decide`` gives the verdict: ship only when the primary metric is better and every guardrail
holds (non-inferior within its margin). The guardrails:

- ``error_rate``: its logged rows that are not "ok", against the champion's (``experiments.error_rate_margin``,
  see ``core.experiments.rate_guardrail``);
- ``latency_p99``: its answered requests slower than the champion's p99 (``experiments.latency_margin``, see
  ``core.experiments.latency_guardrail``); each variant's p99 is in its summary;
- ``drift`` and ``performance``: the verdicts of the newest stored monitoring report, when it covers the window
  and both variants (``pipelines.guardrails`` says what is fair to count against the challenger). Without one
  they are not judged, left out of the guardrails, and said in the notes: monitoring is a separate job that may
  not run at all, and the error rate, the latency and the primary metric already judge the challenger head to head.

Units: distinct routing keys (routing is sticky, so a key is one unit however many requests it sends), plus each
request without a key (assigned at random, so each is a unit of its own), for the split and for the primary metric
alike: each key's labelled outcomes are summed and the metric is a ratio over keys (``core.units``). The error rate
and the latency count requests (a batch's chunk is one), with exact per-variant bounds.

Shadows (``serve.shadow``) answered nobody, so no feedback names their rows: a shadow row is joined through its
routing key to the primary row of the same key, the latest at or before it (the request it copied), and takes that
row's feedback and maturity. Rows without a key cannot be joined. A shadow's agreement with the champion is the
share of the joined requests the champion answered where the shadow's answer was the champion's.

About 470 lines, one concept: the report's values live in ``core.experiment_report``, its statistics in
``core.experiments``, the guardrails from monitoring in ``pipelines.guardrails``; what remains is reading each
variant's rows once and scoring them (primaries and shadows share the reads, so they stay together).
"""

from __future__ import annotations

import bisect
import math
import time
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shipml.adapters.registry import AliasMove, MlflowRegistry, ModelRef
from shipml.adapters.store import Outcomes, PredictionStore
from shipml.config import Settings
from shipml.core.experiment_report import ChallengerResult, ExperimentReport, ShadowResult, VariantSummary
from shipml.core.experiments import (
    DRIFT,
    LATENCY_P99,
    LATENCY_QUANTILE,
    PERFORMANCE,
    Guardrail,
    SampleRatio,
    VariantStats,
    Verdict,
    compare,
    decide,
    latency_guardrail,
    rate_guardrail,
    sample_ratio_mismatch,
    unit_stats,
)
from shipml.core.monitor_report import DriftReport, SegmentReport
from shipml.core.prediction import DEFAULT_VARIANT, Role, Truth
from shipml.core.sequential import Kind, SampleSize, sample_size
from shipml.core.units import per_unit
from shipml.core.window import Window
from shipml.errors import ConfigError, PromotionRefused, RegistryError, StoredReportUnreadable
from shipml.pipelines.guardrails import monitored_guardrails
from shipml.pipelines.promote import promote
from shipml.pipelines.workspace import Workspace

ACCURACY = "accuracy"
NEGATIVE_ABSOLUTE_ERROR = "negative_absolute_error"
# The experiment's verdict over several challengers: the first of these that any challenger reached.
PRECEDENCE: tuple[Verdict, ...] = ("unhealthy", "ship", "rollback", "continue", "no_data")


@dataclass(frozen=True)
class Promotion:
    """What ``ab promote`` did: the variant and the version it moved to production, and the alias moves (none when
    that version was production already)."""

    variant: str
    name: str
    version: str
    verdict: Verdict
    forced: bool
    moves: tuple[AliasMove, ...]


@dataclass(frozen=True)
class _Arm:
    name: str
    role: Role
    model: str  # its registry reference
    share: float

    @property
    def registered(self) -> str:
        """The registered model its rows are logged under."""
        return _model_of(self.model)


@dataclass(frozen=True)
class _Run:
    """What one report reads once and every variant shares."""

    window: Window
    feedback: Mapping[str, Truth]
    matured_before: float  # rows at or before this are old enough to have feedback (monitor.label_delay_s)
    regression: bool
    metric: str
    kind: Kind
    notes: list[str]
    monitoring: dict[str, DriftReport | None] = field(default_factory=dict)  # per registered model, read once


@dataclass(frozen=True)
class _Scored:
    outcomes: np.ndarray
    keys: np.ndarray  # each outcome's routing key (None: its request had none)
    matured: int
    labelled: int


class ExperimentJob:
    """Builds the report of the experiment in ``settings.serve`` from the store, and promotes its winner."""

    def __init__(
        self,
        settings: Settings,
        store: PredictionStore,
        registry: MlflowRegistry,
        cache_dir: Path | None = None,
        *,
        variants: Sequence[tuple[str, str, float]] | None = None,
    ) -> None:
        """``variants``: (name, registry reference, weight) of the primary variants, the champion first, instead of
        ``serve.variants`` and ``serve.shadow`` (a canary's champion and candidate at the current step)."""
        self.settings = settings
        self.store = store
        self.registry = registry
        self.cache_dir = cache_dir  # the jobs' common signature (MonitorJob's); the report loads no version
        if variants is None:
            self.primaries, self.shadows = _arms(settings)
        else:
            self.primaries, self.shadows = [_Arm(n, Role.PRIMARY, m, w) for n, m, w in variants], []

    @classmethod
    def of(cls, ws: Workspace, *, variants: Sequence[tuple[str, str, float]] | None = None) -> ExperimentJob:
        """The job over ``ws``'s store and registry (``variants`` as in the constructor)."""
        return cls(ws.settings, ws.store, ws.registry, ws.cache_dir, variants=variants)

    def report(self, model: str, window: Window, *, save: bool = False) -> ExperimentReport:
        """The experiment's report over ``window`` (stored when ``save``, where the service's experiment gauges read
        it); ``model`` names it (a registered model one of its variants serves: each variant's rows are read under
        its own reference's model)."""
        now = time.time()
        self._check_model(model)
        rows = {a.name: self._read(a, window) for a in self.primaries}
        regression = _is_regression(rows.values(), self.settings)
        run = _Run(
            window, self._feedback(rows.values()), now - self.settings.monitor.label_delay_s, regression,
            NEGATIVE_ABSOLUTE_ERROR if regression else ACCURACY, "mean" if regression else "proportion", [],
        )  # fmt: skip
        summaries: list[VariantSummary] = []
        errors: dict[str, tuple[int, int]] = {}
        latencies: dict[str, np.ndarray] = {}
        for arm in self.primaries:
            scored = _scored(rows[arm.name].ids, rows[arm.name], run)
            requests = self._count(arm, window, status=None)
            failed = max(0, requests - self._count(arm, window, status="ok"))
            errors[arm.name] = (failed, requests)
            latencies[arm.name] = self._latencies(arm, window)
            summaries.append(self._summary(arm, rows[arm.name], scored, requests, failed, latencies[arm.name], run))
        srm = sample_ratio_mismatch({s.name: s.units for s in summaries}, {a.name: a.share for a in self.primaries})
        champion = summaries[0]
        arms = {a.name: a for a in self.primaries}
        challengers = tuple(
            self._challenger(champion, s, errors, latencies, srm, run, (arms[champion.name], arms[s.name]))
            for s in summaries[1:]
        )
        shadows = [self._shadow(arm, rows, champion, run) for arm in self.shadows]
        verdict, reasons, winner = _overall(champion, challengers)
        report = ExperimentReport(
            model, window.since, window.until, now, run.metric, run.kind, champion.name,
            (*summaries, *(summary for summary, _ in shadows)), srm, challengers, tuple(r for _, r in shadows),
            verdict, reasons, winner, tuple(run.notes),
        )  # fmt: skip
        if save:
            self.store.experiments.save(report)
        return report

    def promote(
        self, report: ExperimentReport, variant: str | None = None, *, force: bool = False, reason: str = ""
    ) -> Promotion:
        """Move the winner's version (or ``variant``'s, which needs ``force`` unless it is the winner) to
        production through the registry's promote, which keeps the version it replaces as `previous`."""
        arms = {a.name: a for a in (*self.primaries, *self.shadows)}
        if variant is None:
            if force:
                raise ConfigError(["--force: give the variant to promote with --variant NAME"])
            if report.verdict != "ship" or report.winner is None:
                why = f" ({report.reasons[0]})" if report.reasons else ""
                raise PromotionRefused(
                    f"ab promote: the experiment's verdict is {report.verdict}, not ship{why}; nothing promoted "
                    "(to promote a variant anyway: --variant NAME --force)"
                )
            variant = report.winner
        elif variant not in arms:
            raise ConfigError(
                [f"--variant: {variant!r} is not a variant of the experiment (variants: {', '.join(arms)})"]
            )
        elif not force and (report.verdict != "ship" or report.winner != variant):
            raise PromotionRefused(
                f"ab promote: {variant} is not the experiment's winner (verdict {report.verdict}, winner "
                f"{report.winner or 'none'}); nothing promoted (add --force to promote it anyway)"
            )
        info = self.registry.resolve(ModelRef.parse(arms[variant].model))
        why = reason or f"ab promote: variant {variant} ({report.verdict})"
        done = promote(self.registry, info.name, info.version, "production", why)
        return Promotion(variant, info.name, info.version, report.verdict, force, done.moves)

    def _check_model(self, model: str) -> None:
        names = {a.registered for a in (*self.primaries, *self.shadows)}
        if model not in names:
            raise ConfigError(
                [f"--model: no variant of the experiment serves {model!r} (it serves {', '.join(sorted(names))})"]
            )

    def _feedback(self, rows: typing.Iterable[Outcomes]) -> dict[str, Truth]:
        """The feedback of the primaries' rows (a shadow's row is judged by its primary row's): the window's only."""
        return self.store.feedback.read(i for r in rows for i in r.ids.tolist())

    def _read(self, arm: _Arm, window: Window) -> Outcomes:
        return self.store.predictions.read_outcomes(
            arm.registered, window.since, window.until, variant=arm.name, role=arm.role
        )

    def _count(self, arm: _Arm, window: Window, status: str | None) -> int:
        """``arm``'s logged rows in the window with ``status`` (None: any)."""
        return self.store.predictions.count(
            arm.registered, variant=arm.name, role=arm.role, since=window.since, until=window.until, status=status
        )

    def _latencies(self, arm: _Arm, window: Window) -> np.ndarray:
        """``arm``'s answered requests' latencies (ms) in the window."""
        return self.store.predictions.read_latencies(
            arm.registered, window.since, window.until, variant=arm.name, role=arm.role
        )

    def _monitoring(self, model: str, run: _Run) -> DriftReport | None:
        """The newest stored monitoring report of ``model`` (read once per report), if it overlaps the window."""
        if model not in run.monitoring:
            try:
                report = self.store.reports.latest(model)
            except StoredReportUnreadable as exc:
                run.notes.append(f"the newest monitoring report of {model} cannot be read: {exc.message}")
                report = None
            if report is not None and not (report.since < run.window.until and report.until > run.window.since):
                report = None
            run.monitoring[model] = report
        return run.monitoring[model]

    def _segment(self, arm: _Arm, version: str | None, run: _Run) -> tuple[SegmentReport | None, str]:
        """The segment of ``arm`` (at ``version`` when the registry says which) in its model's newest monitoring
        report, or None and why not."""
        report = self._monitoring(arm.registered, run)
        if report is None:
            return (
                None,
                f"no monitoring report of {arm.registered} covers the window (`shipml monitor drift` writes one)",
            )
        found = [s for s in report.segments if s.variant == arm.name and version in (None, s.version)]
        if not found:
            which = f"version {version} of {arm.name}" if version is not None else arm.name
            return None, f"the newest monitoring report of {arm.registered} has no segment for {which}"
        return max(found, key=lambda s: s.rows), ""

    def _version(self, arm: _Arm, notes: list[str]) -> str | None:
        try:
            return self.registry.resolve(ModelRef.parse(arm.model)).version
        except RegistryError as exc:
            notes.append(f"variant {arm.name}: {arm.model} does not resolve now: {exc.message}")
            return None

    def _summary(
        self, arm: _Arm, rows: Outcomes, scored: _Scored, requests: int, errors: int, latencies: np.ndarray, run: _Run
    ) -> VariantSummary:
        units, keyed = rows.units()
        p99 = float(np.quantile(latencies, LATENCY_QUANTILE)) if len(latencies) else math.nan
        return VariantSummary(
            arm.name, arm.role, arm.model, self._version(arm, run.notes), arm.share, requests, errors, units, keyed,
            scored.matured, scored.labelled, unit_stats(arm.name, per_unit(scored.outcomes, scored.keys), run.kind), p99,
        )  # fmt: skip

    def _challenger(
        self,
        champion: VariantSummary,
        challenger: VariantSummary,
        errors: Mapping[str, tuple[int, int]],
        latencies: Mapping[str, np.ndarray],
        srm: SampleRatio,
        run: _Run,
        arms: tuple[_Arm, _Arm],
    ) -> ChallengerResult:
        s = self.settings.experiments
        primary = compare(champion.metric, challenger.metric, metric=run.metric, alpha=s.alpha, expected_n=s.expected_n)
        error_rate = rate_guardrail(errors[champion.name], errors[challenger.name], s.error_rate_margin, alpha=s.alpha)
        latency = latency_guardrail(
            latencies[champion.name], latencies[challenger.name], s.latency_margin, alpha=s.alpha,
            expected_n=s.expected_n, name=LATENCY_P99,
        )  # fmt: skip
        (theirs, why), (mine, my_why) = (
            self._segment(arms[0], champion.version, run),
            self._segment(arms[1], challenger.version, run),
        )
        monitored: tuple[Guardrail, ...] = ()
        if theirs is None or mine is None:
            run.notes.append(
                f"guardrails {DRIFT} and {PERFORMANCE} of {challenger.name}: not judged, {my_why or why}; "
                "they do not block ship"
            )
        else:
            monitored = monitored_guardrails(champion.name, challenger.name, theirs, mine, run.notes)
        guardrails = (error_rate, latency, *monitored)
        share = challenger.share / (champion.share + challenger.share)
        size = self._sample_size(champion.metric, challenger.metric, share, run)
        return ChallengerResult(
            challenger.name,
            primary,
            guardrails,
            size,
            decide(primary, guardrails, srm, min_count=s.min_count, min_events=s.min_events),
        )

    def _sample_size(
        self, champion: VariantStats, challenger: VariantStats, share: float, run: _Run
    ) -> SampleSize | None:
        s = self.settings.experiments
        if champion.n == 0:
            run.notes.append(f"sample size for {challenger.name}: the champion has no labelled predictions yet")
            return None
        try:
            return sample_size(
                champion.mean, s.mde, kind=run.kind,
                variance=champion.variance if math.isfinite(champion.variance) else None,
                alpha=s.alpha, treatment_share=share, observed=champion.n + challenger.n,
            )  # fmt: skip
        except ValueError as exc:
            run.notes.append(f"sample size for {challenger.name}: {exc}")
            return None

    def _shadow(
        self, arm: _Arm, primaries: Mapping[str, Outcomes], champion: VariantSummary, run: _Run
    ) -> tuple[VariantSummary, ShadowResult]:
        rows = self._read(arm, run.window)
        variant, position = _join(rows, primaries)
        joined = position >= 0
        # a shadow row's ground truth is its primary row's: that row's id (feedback) and time (maturity)
        pairs = list(zip(variant.tolist(), position.tolist(), strict=True))
        primary_ids = np.array([primaries[v].ids[i] if i >= 0 else None for v, i in pairs], dtype=object)
        primary_ts = np.array([primaries[v].ts[i] if i >= 0 else np.inf for v, i in pairs], dtype=np.float64)
        scored = _scored(primary_ids, Outcomes(rows.ids, primary_ts, rows.label, rows.score, rows.keys), run)
        requests = self._count(arm, run.window, status=None)
        failed = max(0, requests - len(rows.ids))
        summary = self._summary(arm, rows, scored, requests, failed, self._latencies(arm, run.window), run)
        if len(rows.ids) and not joined.any():
            run.notes.append(f"shadow {arm.name}: none of its rows could be joined to a primary row by routing key")
        s = self.settings.experiments
        comparison = compare(champion.metric, summary.metric, metric=run.metric, alpha=s.alpha, expected_n=s.expected_n)
        served = joined & (variant == champion.name)
        answered = primaries[champion.name].score if run.regression else primaries[champion.name].label
        mine = (rows.score if run.regression else rows.label)[served]
        agreement, difference = _agreement(mine, answered[position[served]], run.regression)
        return summary, ShadowResult(arm.name, comparison, int(joined.sum()), agreement, difference, int(served.sum()))


def _arms(settings: Settings) -> tuple[list[_Arm], list[_Arm]]:
    """The experiment's primary variants (the champion first) and shadows, from ``serve``."""
    serve = settings.serve
    if not serve.variants and not serve.shadow:
        raise ConfigError([
            "serve.variants: `shipml ab` judges an experiment, and the config has none "
            "(add serve.variants, or serve.shadow)"
        ])  # fmt: skip
    if serve.variants:
        primaries = [_Arm(v.name, Role.PRIMARY, v.model, v.weight) for v in serve.variants]
    else:
        primaries = [_Arm(DEFAULT_VARIANT, Role.PRIMARY, settings.serve_ref(), 1.0)]
    return primaries, [_Arm(s.name, Role.SHADOW, s.model, s.fraction) for s in serve.shadow]


def _model_of(reference: str) -> str:
    return ModelRef.parse(reference).name


def _is_regression(rows: typing.Iterable[Outcomes], settings: Settings) -> bool:
    """A regressor's rows carry no predicted label; without rows, the config's task says (classification if none)."""
    labels = [r.label for r in rows if len(r.label)]
    if labels:
        return all(x is None for x in np.concatenate(labels).tolist())
    return settings.model is not None and settings.model.task == "regression"


def _scored(ids: np.ndarray, rows: Outcomes, run: _Run) -> _Scored:
    """The primary metric's outcome of each labelled row: feedback is looked up by ``ids`` (None: no feedback) and
    only rows with ``ts`` at or before ``run.matured_before`` count."""
    matured = rows.ts <= run.matured_before
    found = [run.feedback.get(i) if i is not None else None for i in ids.tolist()]
    if run.regression:
        truth = np.array([np.nan if f is None or f.value is None else f.value for f in found], dtype=np.float64)
        labelled = matured & np.isfinite(truth)
        outcomes = -np.abs(rows.score[labelled] - truth[labelled])
    else:
        text = np.array([None if f is None else f.label for f in found], dtype=object)
        labelled = matured & np.array([t is not None for t in text.tolist()], dtype=bool)
        outcomes = (rows.label[labelled].astype(str) == text[labelled].astype(str)).astype(np.float64)
    return _Scored(outcomes, rows.keys[labelled], int(matured.sum()), int(labelled.sum()))


def _join(shadow: Outcomes, primaries: Mapping[str, Outcomes]) -> tuple[np.ndarray, np.ndarray]:
    """For each shadow row, the primary row of the same routing key it copied (the latest at or before it, else
    the first after): that row's variant and position in its variant's rows (-1 and None when there is none)."""
    by_key: dict[str, list[tuple[float, str, int]]] = {}
    for name, rows in primaries.items():
        for i, (key, ts) in enumerate(zip(rows.keys.tolist(), rows.ts.tolist(), strict=True)):
            if key is not None:
                by_key.setdefault(key, []).append((ts, name, i))
    for found in by_key.values():
        found.sort()
    variant = np.full(len(shadow.ids), None, dtype=object)
    position = np.full(len(shadow.ids), -1, dtype=np.int64)
    for j, (key, ts) in enumerate(zip(shadow.keys.tolist(), shadow.ts.tolist(), strict=True)):
        candidates = by_key.get(key) if key is not None else None
        if not candidates:
            continue
        at = bisect.bisect_right([c[0] for c in candidates], ts)
        _, variant[j], position[j] = candidates[at - 1] if at > 0 else candidates[0]
    return variant, position


def _agreement(mine: np.ndarray, theirs: np.ndarray, regression: bool) -> tuple[float, float]:
    """(share of equal labels, mean absolute difference of values): the one that applies, NaN for the other."""
    if len(mine) == 0:
        return math.nan, math.nan
    if regression:
        return math.nan, float(np.mean(np.abs(mine.astype(np.float64) - theirs.astype(np.float64))))
    return float(np.mean(mine.astype(str) == theirs.astype(str))), math.nan


def _overall(
    champion: VariantSummary, challengers: Sequence[ChallengerResult]
) -> tuple[Verdict, tuple[str, ...], str | None]:
    """The experiment's verdict: the first of PRECEDENCE any challenger reached; with several challengers each
    reason names its challenger; the winner is the shipping challenger with the largest difference."""
    if not challengers:
        if champion.metric.n == 0:
            return "no_data", (f"variant {champion.name} has no labelled predictions in the window",), None
        return "continue", ("no challenger to decide on: shadows are compared with the champion, never shipped",), None
    verdict = min((c.decision.verdict for c in challengers), key=PRECEDENCE.index)
    chosen = [c for c in challengers if c.decision.verdict == verdict]
    several = len(challengers) > 1 and verdict != "unhealthy"  # a mismatch is the whole split's, said once
    reasons = tuple(dict.fromkeys(
        f"{c.variant}: {r}" if several else r for c in chosen for r in c.decision.reasons
    ))  # fmt: skip
    winner = max(chosen, key=lambda c: c.primary.difference.estimate).variant if verdict == "ship" else None
    return verdict, reasons, winner
