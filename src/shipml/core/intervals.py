"""Closed-form confidence intervals of the monitored classification metrics, and of a difference of two of them.

Each assumes independent labelled rows (the unit is the row) drawn from one population:

* a proportion (accuracy): Wilson's score interval;
* f1: f1 = 2J / (1 + J) with J = TP / (TP + FP + FN) (the Jaccard index); given the m rows that are a true or a
  predicted positive, TP is exactly Binomial(m, J), so Wilson's interval for J, mapped through the increasing
  2J / (1 + J), is an interval for f1 with the Wilson interval's coverage at every m (no bootstrap, no normal
  approximation of a ratio);
* roc_auc: DeLong's variance (DeLong, DeLong & Clarke-Pearson 1988; placement values), the interval built on
  the logit scale so that it stays inside (0, 1) and keeps its coverage near 1;
* the difference of two independent estimates: MOVER (Newcombe 1998; Zou & Donner 2008), which recovers each
  estimate's variance from its own interval, asymmetric ones included.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]


def z_of(confidence: float) -> float:
    """The two-sided normal quantile of ``confidence`` (1.96 at 0.95)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson_interval(successes: int, count: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion (no continuity correction): never outside [0, 1], and honest at
    small counts and extreme rates where the normal approximation is not."""
    if count <= 0:
        return 0.0, 1.0
    z = z_of(confidence)
    p = successes / count
    denominator = 1.0 + z * z / count
    center = (p + z * z / (2 * count)) / denominator
    half = z * math.sqrt(p * (1 - p) / count + z * z / (4 * count * count)) / denominator
    return max(0.0, center - half), min(1.0, center + half)


def f1_interval(tp: int, fp: int, fn: int, confidence: float = 0.95) -> tuple[float, float]:
    """Interval of a binary f1 from its confusion counts (see the module docstring): Wilson's interval of the
    Jaccard index J = TP / (TP + FP + FN), mapped to f1 = 2J / (1 + J). [0, 1] when there is no positive at all."""
    lower, upper = wilson_interval(tp, tp + fp + fn, confidence)
    return 2 * lower / (1 + lower), 2 * upper / (1 + upper)


def auc_interval(positive_scores: Floats, negative_scores: Floats, confidence: float = 0.95) -> tuple[float, float]:
    """DeLong interval of the roc_auc of scores of positives against negatives (both non-empty), on the logit
    scale. A window that separates perfectly (roc_auc 0 or 1, DeLong's variance 0) gets Wilson's interval with
    the smaller class's count, the rows that bound what it can show."""
    n_pos, n_neg = len(positive_scores), len(negative_scores)
    both = np.concatenate([positive_scores, negative_scores])
    ranks = _midranks(both)
    pos_ranks = ranks[:n_pos]
    # placement values: for a positive, the share of negatives below it (ties half); for a negative, of positives above
    v10 = (pos_ranks - _midranks(positive_scores)) / n_neg
    v01 = 1.0 - (ranks[n_pos:] - _midranks(negative_scores)) / n_pos
    auc = float(v10.mean())
    variance = (float(np.var(v10, ddof=1)) if n_pos > 1 else 0.0) / n_pos + (
        float(np.var(v01, ddof=1)) if n_neg > 1 else 0.0
    ) / n_neg
    if auc <= 0.0 or auc >= 1.0 or variance <= 0.0:
        count = min(n_pos, n_neg)
        return wilson_interval(round(auc * count), count, confidence)
    logit = math.log(auc / (1 - auc))
    half = z_of(confidence) * math.sqrt(variance) / (auc * (1 - auc))
    return _expit(logit - half), _expit(logit + half)


def difference_upper(a: tuple[float, float, float], b: tuple[float, float, float]) -> float:
    """The upper bound of a - b by MOVER, from each independent estimate's (value, lower, upper) at one
    confidence: (a - b) + sqrt((upper_a - a)^2 + (b - lower_b)^2). Its lower bound is -difference_upper(b, a)."""
    value_a, _, upper_a = a
    value_b, lower_b, _ = b
    return (value_a - value_b) + math.sqrt((upper_a - value_a) ** 2 + (value_b - lower_b) ** 2)


def _midranks(values: Floats) -> Floats:
    """1-based ranks, ties given their mean rank."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    mid = (starts + ends + 1) / 2.0  # mean of ranks start+1 .. end
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.repeat(mid, ends - starts)
    return ranks


def _expit(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))
