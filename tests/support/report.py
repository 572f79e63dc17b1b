"""The report page's test helpers: the drift reports drawn (a synthetic one with markup in its names, and the
stored sample), a parser of the page's elements and figures, and an experiment logged into a real SQLite store."""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from shipml.adapters.registry import ModelRef
from shipml.adapters.store import PredictionStore
from shipml.config import Settings, settings_from_mapping
from shipml.core.binning import PREDICTION
from shipml.core.drift import MULTIVARIATE, FeatureDrift
from shipml.core.experiment_history import ExperimentHistory
from shipml.core.monitor_report import Distribution, DriftReport, PerformanceEntry, SegmentReport, SeriesPoint
from shipml.core.performance import PerformanceEstimate, wilson_interval
from shipml.core.window import Window
from shipml.pipelines.experiment_history import experiment_history
from shipml.pipelines.experiments import ExperimentJob
from shipml.report import render_report
from tests.support.logged import label_all, logged

SAMPLE = Path(__file__).parent / "data" / "sample_report.json"  # a stored report, as the job writes it
XSS = "<script>alert(1)</script>"
T0 = 1_795_000_000.0
HOUR = 3600.0


def psi_drift(feature: str, value: float, rows: int, verdict: str, kind: str = "numeric") -> FeatureDrift:
    return FeatureDrift(feature, kind, "psi", value, 0.1, 0.2, rows, verdict)  # type: ignore[arg-type]


def drift_series(feature: str, values: list[float]) -> list[SeriesPoint]:
    """One point per hour; a value of -1 is a slice with too few rows (a gap in the chart)."""
    points = []
    for i, v in enumerate(values):
        verdict = "not_enough_data" if v < 0 else "drift" if v >= 0.2 else "warn" if v >= 0.1 else "no_drift"
        value, rows = (0.0, 3) if v < 0 else (v, 500)
        points.append(SeriesPoint(T0 + i * HOUR, T0 + (i + 1) * HOUR, feature, "psi", value, rows, verdict))  # type: ignore[arg-type]
    return points


def accuracy(kind: str, correct: int, count: int, holdout: float, start: float | None) -> PerformanceEntry:
    lower, upper = wilson_interval(correct, count)
    value = correct / count
    estimate = PerformanceEstimate("accuracy", value, lower, upper, count, kind, method="wilson")  # type: ignore[arg-type]
    dropped = value < holdout - 0.05
    reason = f"{value:.4f} vs holdout {holdout:.4f}"
    return PerformanceEntry(estimate, holdout, dropped, reason, start, None if start is None else start + 2 * HOUR)


def segment(version: str, variant: str, shift: float) -> SegmentReport:
    """A segment with a drifted numeric feature, a categorical holding an XSS-shaped category, the prediction, the
    multivariate check, and realised and estimated accuracy falling over the window."""
    plan_labels = ("basic", XSS, "premium & more", "__unseen__", "__null__")
    drift = (
        psi_drift("tenure", 0.31 + shift, 12_000, "drift"),
        FeatureDrift("tenure", "numeric", "js", 0.2 + shift, 0.13, 0.19, 12_000, "drift", decisive=False),
        psi_drift("plan", 0.12, 12_000, "warn", "categorical"),
        FeatureDrift("plan", "categorical", "tvd", 0.08, 0.05, 0.1, 12_000, "warn", p_value=1e-12),
        psi_drift("monthly_charges", 0.013, 12_000, "no_drift"),
        psi_drift(PREDICTION, 0.05, 12_000, "no_drift"),
        FeatureDrift(MULTIVARIATE, "multivariate", "domain_auc", 0.71, 0.6, 0.7, 4_000, "drift", p_value=0.001),
    )
    distributions = (
        Distribution(
            "tenure",
            "numeric",
            ("[-inf, 12)", "[12, 24)", "[24, inf)", "__null__"),
            (0.3, 0.4, 0.3, 0.0),
            (6000, 4000, 2000, 0),
        ),
        Distribution("plan", "categorical", plan_labels, (0.5, 0.3, 0.2, 0.0, 0.0), (5000, 3000, 3000, 900, 100)),
        Distribution(
            "monthly_charges", "numeric", ("[-inf, 50)", "[50, inf)", "__null__"), (0.5, 0.5, 0.0), (6100, 5900, 0)
        ),
        Distribution(PREDICTION, "numeric", ("[-inf, 0.5)", "[0.5, inf)"), (0.7, 0.3), (8000, 4000)),
    )
    series = (
        drift_series("tenure", [0.01 * i for i in range(22)] + [-1, 0.4])
        + drift_series("plan", [0.05, -1, -1] + [0.12] * 21)
        + drift_series("monthly_charges", [0.013] * 24)
        + drift_series(PREDICTION, [0.05] * 24)
    )
    performance = (
        accuracy("realised", 700, 1000, 0.80, None),
        accuracy("estimated", 9000, 12000, 0.80, None),
        PerformanceEntry(
            PerformanceEstimate("roc_auc", None, None, None, 0, "estimated", False, "no calibrated probabilities"),
            0.84, False, "not judged: no calibrated probabilities",
        ),
    )  # fmt: skip
    performance_series = tuple(
        accuracy(kind, correct, count, 0.80, T0 + i * 2 * HOUR)
        for i in range(12)
        for kind, correct, count in (("realised", 80 - 2 * i, 100), ("estimated", 790 - 5 * i, 1000))
    )
    return SegmentReport(
        version, variant, 12_000, "drift", drift, distributions, tuple(series), performance, performance_series,
        {"pending": 11_000, "matured": 12_000, "labelled": 1_000}, ("estimated roc_auc refused: " + XSS,),
    )  # fmt: skip


def synthetic_report() -> DriftReport:
    """Two segments with drift and performance data; a model name and a category that look like markup."""
    segments = (segment("3", "main", 0.0), segment("4", "canary<b>", 0.1))
    return DriftReport('churn "</script>', T0, T0 + 24 * HOUR, T0 + 24 * HOUR + 5, segments)


def sample_report() -> DriftReport:
    return DriftReport.from_json(SAMPLE.read_text())


VOID = {"meta", "link", "br", "hr", "img", "input", "area", "base", "col", "embed", "source", "track", "wbr"}
NOT_LABELS = {"figure", "gauge", "value", "verdict", "start", "bucket"}


class Elements(HTMLParser):
    """Every start tag with its attributes, the src/href values, the text of the embedded JSON, and every
    figure (an element with ``data-figure``) with the ``data-*`` it has or inherits from its ancestors."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.links: list[str] = []
        self.scripts: list[str] = []
        self.figures: list[dict[str, str]] = []
        self._open: list[tuple[str, dict[str, str]]] = []  # open elements and the data-* they pass down

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.append((tag, a))
        self.links += [v for k, v in a.items() if k in ("src", "href", "xlink:href", "action", "srcset", "poster")]
        inherited = self._open[-1][1] if self._open else {}
        data = {**inherited, **{k[5:]: v for k, v in a.items() if k.startswith("data-")}}
        if "data-figure" in a:
            self.figures.append({**data, "gauge": a.get("data-gauge", ""), "tag": tag})
        if tag == "script":
            self.scripts.append("")
        if tag not in VOID:
            self._open.append((tag, {k: v for k, v in data.items() if k not in ("figure", "gauge", "value")}))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self._open.pop()

    def handle_endtag(self, tag: str) -> None:
        while self._open and self._open.pop()[0] != tag:
            pass

    def handle_data(self, data: str) -> None:
        if self._open and self._open[-1][0] == "script":
            self.scripts[-1] += data

    def marked(self, figure: str) -> list[dict[str, str]]:
        return [f for f in self.figures if f["figure"] == figure]


def figures(page: str) -> list[dict[str, str]]:
    """Every figure of a report page: its name (``figure``), ``value``, ``gauge`` ('' when not exported)
    and labels (all other keys but ``verdict``, ``start``, ``bucket``); for the checks against /metrics."""
    return parse(page).figures


def parse(page: str) -> Elements:
    parser = Elements()
    parser.feed(page)
    parser.close()
    return parser


_ids = itertools.count()


class Registry:
    """Resolves ``churn/N`` to version N: all the experiment report asks of the registry."""

    def resolve(self, ref: ModelRef) -> Any:
        return SimpleNamespace(name=ref.name, version=ref.version or "7")


def experiment_settings(weights: tuple[float, float] = (0.5, 0.5), shadow: bool = False) -> Settings:
    serve: dict[str, Any] = {
        "variants": [
            {"name": "champion", "model": "churn/1", "weight": weights[0]},
            {"name": "challenger", "model": "churn/2", "weight": weights[1]},
        ]
    }
    if shadow:
        serve["shadow"] = [{"name": "candidate", "model": "churn/3", "fraction": 0.25}]
    return settings_from_mapping({"serve": serve})


def log(
    store: PredictionStore,
    variant: str,
    times: Sequence[float],
    correct: Sequence[bool | None],
    *,
    keys: Sequence[str | None] | None = None,
    role: str = "primary",
    status: str = "ok",
) -> list[str]:
    """A row of ``variant`` at each of ``times`` predicting "1"; feedback "1" (right) or "0" (wrong), none for None."""
    ids = [f"x{next(_ids):07d}" for _ in times]
    rows = [
        logged(
            pid, ts, "churn", "1", variant, {}, {"predicted_class": "1", "probabilities": {"0": 0.4, "1": 0.6}},
            1.0, role, keys[i] if keys is not None else None, status=status,
        )
        for i, (pid, ts) in enumerate(zip(ids, times, strict=True))
    ]  # fmt: skip
    store.predictions.write([rows])
    label_all(
        store,
        ((pid, "1" if right else "0", None) for pid, right in zip(ids, correct, strict=True) if right is not None),
    )
    return ids


def spread(window: Window, n: int, rng: np.random.Generator) -> list[float]:
    """``n`` sorted times drawn uniformly inside ``window``."""
    return sorted(rng.uniform(window.since, window.until, n).tolist())


@dataclass
class Experiment:
    settings: Settings
    store: PredictionStore
    window: Window
    history: ExperimentHistory

    def job(self) -> ExperimentJob:
        return ExperimentJob(self.settings, self.store, Registry())  # type: ignore[arg-type]

    def page(self) -> str:
        drift = DriftReport("churn", self.window.since, self.window.until, self.window.until, ())
        return render_report(drift, report_id=1, experiment=self.history)


def make_experiment(root: Path, n: int = 400) -> Experiment:
    """Twelve hours of a 50/50 experiment ending an hour ago: the champion right 65 % of the time, the challenger
    95 %, every request with its own routing key; the champion also refused 10 records (its error rate is the
    guardrail's), and a shadow copied a quarter of the champion's keyed requests."""
    rng = np.random.default_rng(11)
    now = time.time()
    window = Window(now - 13 * HOUR, now - HOUR)
    store = PredictionStore(f"sqlite:///{root}/predictions.db")
    champion_times = spread(window, n, rng)
    champion_keys = [f"c{i}" for i in range(n)]
    log(store, "champion", champion_times, (rng.random(n) < 0.65).tolist(), keys=champion_keys)
    log(store, "champion", spread(window, 10, rng), [None] * 10, status="invalid")
    log(store, "challenger", spread(window, n, rng), (rng.random(n) < 0.95).tolist(),
        keys=[f"t{i}" for i in range(n)])  # fmt: skip
    copied = list(range(0, n, 4))
    log(store, "candidate", [champion_times[i] + 0.001 for i in copied], [None] * len(copied),
        keys=[champion_keys[i] for i in copied], role="shadow")  # fmt: skip
    # monitoring's report of both variants over the window (no drift in either's predictions), which the drift and
    # performance guardrails read
    drift = DriftReport("churn", window.since, window.until, window.until, (segment("1", "champion", 0.0),
                        segment("2", "challenger", 0.0)))  # fmt: skip
    store.reports.save(drift)
    s = experiment_settings(shadow=True)
    history = experiment_history(ExperimentJob(s, store, Registry()), "churn", window)  # type: ignore[arg-type]
    return Experiment(s, store, window, history)
