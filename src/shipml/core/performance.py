"""Model performance over one window of predictions, with a count and an interval behind every number.

Realised performance compares predictions with the labels that arrived; estimated performance (confidence-based,
as NannyML's CBPE) reads it from the model's own probabilities before any label arrives, which is only valid
for calibrated probabilities, so it is refused when the version's holdout calibration error is too high.

Intervals (core/intervals.py says what each assumes): Wilson score for accuracy (a proportion), Wilson of the
Jaccard index for a binary f1, DeLong for roc_auc, a normal bootstrap of the rows for macro f1, a percentile one
for rmse and mae; for estimates, the spread of the realised metric when labels are drawn from the probabilities
(normal approximation of the Poisson-binomial for accuracy, simulated for f1 and roc_auc). A drop is judged on the
interval of the difference between the window and the holdout, each with its own uncertainty.

About 400 lines and one concept: realised and estimated performance share their metrics, intervals and bootstrap,
and each half alone would be read with the other open beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from numpy.typing import ArrayLike

from shipml.core.calibration import calibration_error as calibration_error  # its home before core.calibration
from shipml.core.calibration import expected_calibration_error as expected_calibration_error
from shipml.core.intervals import auc_interval, difference_upper, f1_interval, z_of
from shipml.core.intervals import wilson_interval as wilson_interval  # its home before core.intervals
from shipml.core.schema import Task

Kind = Literal["realised", "estimated"]
Floats = npt.NDArray[np.float64]
Statistic = Callable[[Floats], Floats]  # (resamples, n) row weights -> one value per resample

# Resampled weight matrices are built in chunks of at most this many cells (16 MiB of float64 each).
_CHUNK_CELLS = 1 << 21


@dataclass(frozen=True)
class PerformanceOptions:
    """How performance is judged; the monitor fills these from its settings."""

    min_count: int = 100  # under this many rows a value is reported with enough_data=False
    confidence: float = 0.95  # of every interval
    resamples: int = 200  # bootstrap resamples (realised) or label draws (estimated)
    seed: int = 0  # of the resampling, so that a report is reproducible
    max_calibration_error: float = 0.05  # above it (version's holdout), estimates are refused


@dataclass(frozen=True)
class PerformanceEstimate:
    """One metric over one window. ``value`` is None exactly when ``refused`` says why there is no number;
    ``enough_data`` is False when ``count`` is under the configured minimum (the value is shown, not judged)."""

    metric: str
    value: float | None
    lower: float | None
    upper: float | None
    count: int
    kind: Kind
    enough_data: bool = True
    refused: str | None = None
    method: str = ""  # how the interval was made: wilson, bootstrap, normal, simulation


@dataclass(frozen=True)
class PerformanceDrop:
    """The verdict of comparing a window's metric with the version's holdout value."""

    flagged: bool
    reason: str


def realised_performance(
    task: Task,
    y_true: ArrayLike,
    y_pred: ArrayLike,
    score: ArrayLike | None = None,
    positive: Any = None,
    options: PerformanceOptions | None = None,
) -> tuple[PerformanceEstimate, ...]:
    """Realised metrics of one window's labelled rows: accuracy and f1 (binary: of ``positive``; multiclass:
    macro over the labels present) and, for binary with ``score`` (the positive-class probability, NaN where
    absent), roc_auc; regression: rmse and mae."""
    opts = options or PerformanceOptions()
    yt, yp = np.asarray(y_true), np.asarray(y_pred)
    if yt.shape != yp.shape or yt.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D of one length, got {yt.shape} and {yp.shape}")
    if task == "regression":
        errors = yp.astype(np.float64) - yt.astype(np.float64)
        return _rmse(errors, opts), _mae(errors, opts)
    if task == "multiclass":
        return _accuracy(yt == yp, opts), _macro_f1(yt, yp, opts)
    if positive is None:
        raise ValueError("binary realised performance needs the positive class")
    out = [_accuracy(yt == yp, opts), _binary_f1(yt == positive, yp == positive, opts)]
    if score is not None:
        out.append(_roc_auc(yt == positive, np.asarray(score, dtype=np.float64), opts))
    return tuple(out)


def estimated_performance(
    task: Task,
    score: ArrayLike,
    calibration_error: float | None,
    predicted_positive: ArrayLike | None = None,
    options: PerformanceOptions | None = None,
) -> tuple[PerformanceEstimate, ...]:
    """Metrics expected from the model's probabilities alone, taken as calibrated.

    ``score``: binary, the positive-class probability; multiclass, the predicted class's probability (rows
    with a NaN score are left out). ``predicted_positive`` (binary): what the model predicted; by default
    score > 0.5, the argmax. Binary gives accuracy, f1 and roc_auc; multiclass, accuracy. Every estimate is
    refused when ``calibration_error`` (the version's holdout one) is unknown or above the maximum.
    """
    opts = options or PerformanceOptions()
    p = np.asarray(score, dtype=np.float64)
    finite = np.isfinite(p)
    metrics = {"binary": ("accuracy", "f1", "roc_auc"), "multiclass": ("accuracy",)}.get(task, ("rmse", "mae"))
    reason = _refusal(task, calibration_error, int(finite.sum()), opts)
    if reason is not None:
        return tuple(_refused(m, int(finite.sum()), "estimated", reason) for m in metrics)
    if task == "multiclass":
        return (_expected_accuracy(p[finite], opts),)
    predicted = p > 0.5 if predicted_positive is None else np.asarray(predicted_positive, dtype=bool)
    p, predicted = p[finite], predicted[finite]
    return (
        _expected_accuracy(np.where(predicted, p, 1.0 - p), opts),
        _expected_f1(p, predicted, opts),
        _expected_auc(p, opts),
    )


def performance_drop(
    estimate: PerformanceEstimate,
    holdout_value: float,
    tolerance: float,
    lower_is_better: bool,
    holdout_interval: tuple[float, float] | None = None,
) -> PerformanceDrop:
    """Flag a drop only when the window is worse than the holdout by more than ``tolerance`` (absolute, in the
    metric's units) at the bound of their difference nearest no drop, so that neither a noisy window nor a lucky
    holdout raises one.

    The difference's interval is MOVER's (core.intervals.difference_upper) from the window's interval and the
    holdout's own (``holdout_interval``, recorded at training at the same confidence): both are estimates of
    the model's performance, each from its own rows. A version trained before shipml recorded the holdout's
    interval is judged as before, with its holdout value taken as exact (the reason says so). Windows under
    the minimum count and refused estimates are not judged."""
    if estimate.value is None or estimate.lower is None or estimate.upper is None:
        return PerformanceDrop(False, f"not judged: {estimate.refused or 'no interval (no resample had a value)'}")
    if not estimate.enough_data:
        return PerformanceDrop(False, f"not judged: {estimate.count} rows, under the minimum")
    shown = f"{estimate.kind} {estimate.metric} {estimate.value:.4f} [{estimate.lower:.4f}, {estimate.upper:.4f}]"
    window = (estimate.value, estimate.lower, estimate.upper)
    exact = holdout_interval is None
    low, high = (holdout_value, holdout_value) if holdout_interval is None else holdout_interval
    holdout = (holdout_value, min(low, holdout_value), max(high, holdout_value))
    if lower_is_better:  # worse: the window's value above the holdout's; judged at the difference's lower bound
        bound = -difference_upper(holdout, window)
        flagged, side, which = bound > tolerance, "above", "lower"
    else:
        bound = difference_upper(window, holdout)
        flagged, side, which = bound < -tolerance, "below", "upper"
    verdict = "is" if flagged else "is not"
    against = (
        f"holdout {holdout_value:.4f} (taken as exact: the version has no recorded holdout interval)"
        if exact
        else f"holdout {holdout_value:.4f} [{holdout[1]:.4f}, {holdout[2]:.4f}]"
    )
    text = (
        f"{shown} {verdict} {side} {against} by more than {tolerance:g}: "
        f"the {which} bound of the difference is {bound:+.4f}"
    )
    return PerformanceDrop(bool(flagged), text)


# --- realised ---------------------------------------------------------------------------------------------


def _accuracy(correct: npt.NDArray[np.bool_], opts: PerformanceOptions) -> PerformanceEstimate:
    n = len(correct)
    if n == 0:
        return _refused("accuracy", 0, "realised", "no labelled rows in the window")
    k = int(correct.sum())
    lower, upper = wilson_interval(k, n, opts.confidence)
    return PerformanceEstimate("accuracy", k / n, lower, upper, n, "realised", n >= opts.min_count, method="wilson")


def _binary_f1(
    actual: npt.NDArray[np.bool_], predicted: npt.NDArray[np.bool_], opts: PerformanceOptions
) -> PerformanceEstimate:
    """f1 of the positive class, its interval from the Jaccard index's Wilson interval (core.intervals)."""
    n = len(actual)
    if n == 0:
        return _refused("f1", 0, "realised", "no labelled rows in the window")
    tp, fp, fn = int(np.sum(actual & predicted)), int(np.sum(~actual & predicted)), int(np.sum(actual & ~predicted))
    value = float(_f1(np.array([tp]), np.array([fp]), np.array([fn]))[0])
    lower, upper = f1_interval(tp, fp, fn, opts.confidence)
    return PerformanceEstimate("f1", value, lower, upper, n, "realised", n >= opts.min_count, method="wilson-jaccard")


def _macro_f1(yt: np.ndarray, yp: np.ndarray, opts: PerformanceOptions) -> PerformanceEstimate:
    labels = np.unique(np.concatenate([yt, yp]))  # as scikit-learn: the labels present in the window
    actual = (yt[:, None] == labels).astype(np.float64)
    predicted = (yp[:, None] == labels).astype(np.float64)
    tp_cells = actual * predicted

    def f1(weights: Floats) -> Floats:
        tp = weights @ tp_cells
        per_class = _f1(tp, weights @ predicted - tp, weights @ actual - tp, absent=np.nan)
        with np.errstate(invalid="ignore"):  # a resample may lose a class: it is left out, as sklearn would
            return np.asarray(np.nanmean(per_class, axis=1), dtype=np.float64)

    return _bootstrapped("f1", f1, len(yt), opts, normal=True)


def _roc_auc(actual: npt.NDArray[np.bool_], score: Floats, opts: PerformanceOptions) -> PerformanceEstimate:
    finite = np.isfinite(score)
    actual, score = actual[finite], score[finite]
    n = len(score)
    if n == 0 or actual.all() or not actual.any():
        reason = "roc_auc needs labelled rows of both classes with a score; the window has " + (
            f"{int(actual.sum())} positive and {int((~actual).sum())} negative"
        )
        return _refused("roc_auc", n, "realised", reason)
    order = np.argsort(score, kind="stable")
    sorted_score, positive = score[order], actual[order].astype(np.float64)
    value = float(_grouped_auc(sorted_score, positive[None, :], 1.0 - positive[None, :])[0])
    lower, upper = auc_interval(score[actual], score[~actual], opts.confidence)
    return PerformanceEstimate("roc_auc", value, lower, upper, n, "realised", n >= opts.min_count, method="delong")


def _rmse(errors: Floats, opts: PerformanceOptions) -> PerformanceEstimate:
    squared = errors * errors
    return _bootstrapped("rmse", lambda w: np.sqrt(w @ squared / len(squared)), len(squared), opts)


def _mae(errors: Floats, opts: PerformanceOptions) -> PerformanceEstimate:
    absolute = np.abs(errors)
    return _bootstrapped("mae", lambda w: w @ absolute / len(absolute), len(absolute), opts)


def _bootstrapped(
    metric: str, statistic: Statistic, n: int, opts: PerformanceOptions, *, normal: bool = False
) -> PerformanceEstimate:
    """The statistic on the window (every row weight 1) and its bootstrap interval (row weights: how often each
    row was drawn, n draws with replacement): the percentile interval, or with ``normal`` the value +- z times
    the resamples' standard deviation, clipped to [0, 1] (macro f1: with 200 resamples the quantiles' own noise
    costs the percentile interval 1 to 2 points of coverage at 100 to 300 rows; the standard deviation is
    steadier)."""
    if n == 0:
        return _refused(metric, 0, "realised", "no labelled rows in the window")
    value = float(statistic(np.ones((1, n)))[0])
    rng = np.random.default_rng(opts.seed)
    draws = np.concatenate([statistic(_resample_counts(rng, size, n)) for size in _chunk_sizes(opts.resamples, n)])
    if not normal:
        lower, upper = _percentile_interval(draws, opts.confidence)
        return PerformanceEstimate(metric, value, lower, upper, n, "realised", n >= opts.min_count, method="bootstrap")
    finite = draws[np.isfinite(draws)]
    if len(finite) < 2:
        return PerformanceEstimate(metric, value, None, None, n, "realised", n >= opts.min_count, method="bootstrap")
    half = z_of(opts.confidence) * float(np.std(finite, ddof=1))
    lower, upper = max(0.0, value - half), min(1.0, value + half)
    return PerformanceEstimate(
        metric, value, lower, upper, n, "realised", n >= opts.min_count, method="bootstrap-normal"
    )


def _resample_counts(rng: np.random.Generator, resamples: int, n: int) -> Floats:
    """(resamples, n): how many times each row appears in each bootstrap resample."""
    picks = rng.integers(0, n, size=(resamples, n)) + (np.arange(resamples) * n)[:, None]
    return np.bincount(picks.ravel(), minlength=resamples * n).reshape(resamples, n).astype(np.float64)


# --- estimated --------------------------------------------------------------------------------------------


def _refusal(task: Task, error: float | None, count: int, opts: PerformanceOptions) -> str | None:
    if task == "regression":
        return "estimated performance needs class probabilities; a regression model has none"
    if error is None:
        return (
            "the version has no recorded holdout calibration_error (trained before shipml recorded it); "
            "retrain it to estimate performance without labels"
        )
    if error > opts.max_calibration_error:
        return (
            f"the version's holdout calibration_error {error:.4f} is above the maximum "
            f"{opts.max_calibration_error:g}: its probabilities are not calibrated, so estimates from them "
            "would be biased; calibrate the model or rely on realised performance"
        )
    if count == 0:
        return "no predictions with a probability in the window"
    return None


def _expected_accuracy(p_correct: Floats, opts: PerformanceOptions) -> PerformanceEstimate:
    """mean P(correct); interval from the variance of a sum of independent Bernoullis (Poisson-binomial),
    normal approximation, clipped to [0, 1]."""
    n = len(p_correct)
    value = float(p_correct.mean())
    half = z_of(opts.confidence) * float(np.sqrt(np.sum(p_correct * (1.0 - p_correct)))) / n
    return PerformanceEstimate(
        "accuracy", value, max(0.0, value - half), min(1.0, value + half), n, "estimated", n >= opts.min_count,
        method="normal",
    )  # fmt: skip


def _expected_f1(p: Floats, predicted: npt.NDArray[np.bool_], opts: PerformanceOptions) -> PerformanceEstimate:
    """f1 of the expected confusion counts (TP = sum of p over predicted positives, FP = sum of 1 - p there,
    FN = sum of p over predicted negatives)."""
    pred = predicted.astype(np.float64)

    def f1(labels: Floats) -> Floats:
        tp = labels @ pred
        return _f1(tp, (1.0 - labels) @ pred, labels @ (1.0 - pred))

    return _simulated("f1", f1, p, opts)


def _expected_auc(p: Floats, opts: PerformanceOptions) -> PerformanceEstimate:
    """CBPE's roc_auc: the ROC curve of expected counts (each row is p of a positive and 1 - p of a negative)."""
    order = np.argsort(p, kind="stable")
    sorted_p = p[order]
    return _simulated(
        "roc_auc", lambda labels: _grouped_auc(sorted_p, labels[:, order], 1.0 - labels[:, order]), p, opts
    )


def _simulated(metric: str, statistic: Statistic, p: Floats, opts: PerformanceOptions) -> PerformanceEstimate:
    """The statistic on expected labels (p itself) and, as its interval, the spread of the realised metric
    when each row's label is drawn from its probability (what calibrated probabilities promise)."""
    n = len(p)
    value = float(statistic(p[None, :])[0])
    rng = np.random.default_rng(opts.seed)
    draws = [statistic((rng.random((size, n)) < p).astype(np.float64)) for size in _chunk_sizes(opts.resamples, n)]
    lower, upper = _percentile_interval(np.concatenate(draws), opts.confidence)
    return PerformanceEstimate(metric, value, lower, upper, n, "estimated", n >= opts.min_count, method="simulation")


# --- shared -----------------------------------------------------------------------------------------------


def _grouped_auc(sorted_score: Floats, positive: Floats, negative: Floats) -> Floats:
    """roc_auc of weighted rows (rows sorted by score; weights (k, n) of being positive / negative): the
    Mann-Whitney statistic with ties counted half, which equals the trapezoidal area under the ROC curve.
    NaN where a class has no weight."""
    starts = np.flatnonzero(np.r_[True, sorted_score[1:] != sorted_score[:-1]])
    pos = np.add.reduceat(positive, starts, axis=1)
    neg = np.add.reduceat(negative, starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg  # negative weight strictly below each score
    pairs = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(np.sum(pos * (below + 0.5 * neg), axis=1) / pairs, dtype=np.float64)


def _f1(tp: Floats, fp: Floats, fn: Floats, absent: float = 0.0) -> Floats:
    """2TP / (2TP + FP + FN); ``absent`` where the denominator is 0 (0, as scikit-learn's zero_division=0)."""
    denominator = 2.0 * tp + fp + fn
    safe = np.where(denominator > 0, denominator, 1.0)
    return np.asarray(np.where(denominator > 0, 2.0 * tp / safe, absent), dtype=np.float64)


def _chunk_sizes(total: int, n: int) -> Iterator[int]:
    """Split ``total`` resamples of ``n`` rows into chunks of bounded memory."""
    step = max(1, _CHUNK_CELLS // max(n, 1))
    for start in range(0, total, step):
        yield min(step, total - start)


def _percentile_interval(values: Floats, confidence: float) -> tuple[float | None, float | None]:
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return None, None
    alpha = 1.0 - confidence
    lower, upper = np.quantile(finite, [alpha / 2, 1 - alpha / 2])
    return float(lower), float(upper)


def _refused(metric: str, count: int, kind: Kind, reason: str) -> PerformanceEstimate:
    return PerformanceEstimate(metric, None, None, None, count, kind, enough_data=False, refused=reason)
