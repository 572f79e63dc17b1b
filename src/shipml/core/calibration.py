"""How far a model's probabilities are from calibrated, and a recalibration of them for estimating performance.

Estimated performance (core.performance, confidence-based as NannyML's CBPE) reads accuracy, f1 and roc_auc from
the probabilities, which is only right for calibrated ones. ``calibration_error`` measures the gap on the holdout;
``Recalibration`` is a logistic map of the scores (Platt scaling: a slope and an intercept on the log-odds) fitted
on the holdout at training, which the monitor applies before estimating. NannyML fits an isotonic calibrator on
its reference data; two parameters are chosen here because the holdout is often 400 rows, on which an isotonic
fit's steps are noise, while the usual miscalibrations of a fitted model (over- or under-confidence, a shifted
base rate) are a slope and an intercept on the log-odds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from numpy.typing import ArrayLike

Floats = npt.NDArray[np.float64]

_EDGE = 1e-6  # probabilities are clipped this far from 0 and 1 before taking log-odds
MIN_EACH = 10  # a recalibration needs at least this many rows of each outcome on the holdout


@dataclass(frozen=True)
class Recalibration:
    """p' = sigmoid(slope * logit(p) + intercept), fitted on the holdout's (outcome, confidence) by maximum
    likelihood. ``calibration_error``: of the recalibrated scores, cross-fitted (each half of the holdout
    recalibrated by a map fitted on the other half), so that it is not flattered by its own fit."""

    slope: float
    intercept: float
    calibration_error: float

    def apply(self, confidence: ArrayLike) -> Floats:
        p = np.asarray(confidence, dtype=np.float64)
        return _map(p, self.slope, self.intercept)

    def to_dict(self) -> dict[str, float | str]:
        return {
            "method": "logistic",
            "slope": self.slope,
            "intercept": self.intercept,
            "calibration_error": self.calibration_error,
        }

    @classmethod
    def from_dict(cls, raw: object) -> Recalibration | None:
        """The recorded recalibration (``shipml/evaluation.json``), or None when absent (a version trained before)."""
        if not isinstance(raw, dict) or raw.get("method") != "logistic":
            return None
        return cls(float(raw["slope"]), float(raw["intercept"]), float(raw["calibration_error"]))


def fit_recalibration(outcome: ArrayLike, confidence: ArrayLike, seed: int = 0) -> Recalibration | None:
    """The logistic recalibration of ``confidence`` against ``outcome`` (binary: the positive-class probability
    and whether the row was positive; multiclass: the predicted class's probability and whether it was right);
    None when either outcome has fewer than ``MIN_EACH`` rows (nothing to fit it on)."""
    y = np.asarray(outcome, dtype=np.float64)
    p = np.asarray(confidence, dtype=np.float64)
    keep = np.isfinite(p)
    y, p = y[keep], p[keep]
    if min(int(y.sum()), int(len(y) - y.sum())) < MIN_EACH:
        return None
    slope, intercept = _fit(y, _logit(p))
    order = np.random.default_rng(seed).permutation(len(y))
    halves = (order[: len(y) // 2], order[len(y) // 2 :])
    crossed = np.empty(len(y), dtype=np.float64)
    for fit_on, apply_to in (halves, halves[::-1]):
        a, b = _fit(y[fit_on], _logit(p[fit_on]))
        crossed[apply_to] = _map(p[apply_to], a, b)
    return Recalibration(slope, intercept, calibration_error(y, crossed))


def expected_calibration_error(outcome: ArrayLike, confidence: ArrayLike, bins: int = 10) -> float:
    """ECE: the row-weighted mean over ``bins`` equal-mass bins of |observed rate - mean confidence|.

    ``outcome``: whether the row was positive (binary, with ``confidence`` the positive-class probability)
    or correctly predicted (multiclass, with the predicted class's probability). Equal-mass bins because
    scores pile up (most churn probabilities are small): equal-width bins would leave most bins empty and
    judge the crowded one from a single mean. Ties are never split across bins, so the result does not
    depend on the order of the rows.
    """
    y, c, starts = _binned(outcome, confidence, bins)
    return float(np.sum(np.abs(np.add.reduceat(y, starts) - np.add.reduceat(c, starts))) / len(c))


def calibration_error(outcome: ArrayLike, confidence: ArrayLike, bins: int = 10) -> float:
    """The ECE in excess of what label noise alone gives a perfectly calibrated model on the same rows:
    sqrt(max(0, ECE^2 - E0^2)), with E0 the ECE expected under calibration (per bin, the mean absolute
    deviation of a sum of Bernoulli(confidence): sqrt(2 var / pi), normal approximation).

    Why: on a 400-row holdout a perfectly calibrated model has an ECE of about 0.05 from noise alone, so a
    0.05 threshold on the raw ECE would refuse a third of good models; this stays near 0 for them and
    converges to the ECE as the holdout grows. This is the ``calibration_error`` recorded at training time.
    """
    y, c, starts = _binned(outcome, confidence, bins)
    n = len(c)
    ece = np.sum(np.abs(np.add.reduceat(y, starts) - np.add.reduceat(c, starts))) / n
    noise = np.sum(np.sqrt(2.0 / np.pi * np.add.reduceat(c * (1.0 - c), starts))) / n
    return float(np.sqrt(max(0.0, ece * ece - noise * noise)))


def _fit(y: Floats, x: Floats) -> tuple[float, float]:
    """Maximum-likelihood logistic regression of y on x (slope, intercept) by Newton's method, with a small
    ridge on the slope's distance from 1 so that a separable holdout still gives a finite map."""
    ridge = 1e-3
    beta = np.array([1.0, 0.0])
    design = np.column_stack([x, np.ones_like(x)])
    for _ in range(50):
        q = _sigmoid(design @ beta)
        gradient = design.T @ (y - q) - ridge * np.array([beta[0] - 1.0, 0.0])
        hessian = (design * (q * (1.0 - q))[:, None]).T @ design + ridge * np.diag([1.0, 0.0]) + 1e-12 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        step *= min(1.0, 5.0 / float(np.max(np.abs(step))) if np.any(step) else 1.0)  # no wild first steps
        beta = beta + step
        if float(np.max(np.abs(step))) < 1e-10:
            break
    return float(beta[0]), float(beta[1])


def _logit(p: Floats) -> Floats:
    q = np.clip(p, _EDGE, 1.0 - _EDGE)
    return np.asarray(np.log(q / (1.0 - q)), dtype=np.float64)


def _map(p: Floats, slope: float, intercept: float) -> Floats:
    out = _sigmoid(slope * _logit(p) + intercept)
    return np.asarray(np.where(np.isfinite(p), out, math.nan), dtype=np.float64)


def _sigmoid(z: Floats) -> Floats:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * z)), dtype=np.float64)  # no overflow at any z


def _binned(outcome: ArrayLike, confidence: ArrayLike, bins: int) -> tuple[Floats, Floats, npt.NDArray[np.intp]]:
    """Outcomes and confidences sorted by confidence, and the start of each equal-mass bin (ties kept whole)."""
    c = np.asarray(confidence, dtype=np.float64)
    y = np.asarray(outcome, dtype=np.float64)
    if c.ndim != 1 or c.shape != y.shape or len(c) == 0:
        raise ValueError(f"outcome and confidence must be 1-D of one non-zero length, got {y.shape} and {c.shape}")
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    order = np.argsort(c, kind="stable")
    c, y = c[order], y[order]
    n = len(c)
    cuts = np.arange(1, bins) * n // bins
    cuts = np.searchsorted(c, c[cuts[cuts > 0] - 1], side="right")  # move each cut past its ties
    return y, c, np.unique(np.r_[0, cuts[cuts < n]])
