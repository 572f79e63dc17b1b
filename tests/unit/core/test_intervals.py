"""The closed-form intervals of core.intervals equal their published values and brute-force definitions."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from shipml.core.intervals import auc_interval, difference_upper, f1_interval, wilson_interval


def test_mover_with_wilson_intervals_is_newcombes_method_10() -> None:
    """Newcombe (1998), Statistics in Medicine 17:873, table II: 56/70 - 48/80 and 9/10 - 3/10."""
    for (k1, n1, k2, n2), (lower, upper) in {
        (56, 70, 48, 80): (0.0524, 0.3339),
        (9, 10, 3, 10): (0.1705, 0.8090),
    }.items():
        a = (k1 / n1, *wilson_interval(k1, n1))
        b = (k2 / n2, *wilson_interval(k2, n2))
        assert (-difference_upper(b, a), difference_upper(a, b)) == pytest.approx((lower, upper), abs=5e-5)


def test_f1_interval_is_the_jaccard_indexs_wilson_interval_mapped_to_f1() -> None:
    tp, fp, fn = 30, 10, 14
    j_low, j_high = wilson_interval(tp, tp + fp + fn)
    low, high = f1_interval(tp, fp, fn)
    assert (low, high) == pytest.approx((2 * j_low / (1 + j_low), 2 * j_high / (1 + j_high)))
    assert low < 2 * tp / (2 * tp + fp + fn) < high
    assert f1_interval(0, 0, 0) == (0.0, 1.0)  # no positive at all: nothing is known


def test_delong_variance_equals_its_definition_with_ties() -> None:
    rng = np.random.default_rng(4)
    pos, neg = np.round(rng.normal(1, 1, 40), 1), np.round(rng.normal(0, 1, 70), 1)  # rounded: ties
    kernel = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    auc = kernel.mean()
    assert auc == pytest.approx(skm.roc_auc_score(np.r_[np.ones(40), np.zeros(70)], np.r_[pos, neg]))
    variance = kernel.mean(axis=1).var(ddof=1) / 40 + kernel.mean(axis=0).var(ddof=1) / 70
    half = 1.959964 * np.sqrt(variance) / (auc * (1 - auc))
    logit = np.log(auc / (1 - auc))
    want = 1 / (1 + np.exp(-(logit - half))), 1 / (1 + np.exp(-(logit + half)))
    assert auc_interval(pos, neg) == pytest.approx(want, abs=1e-5)


def test_a_perfectly_separating_window_still_has_an_interval_below_1() -> None:
    low, high = auc_interval(np.arange(10.0, 20.0), np.arange(0.0, 30.0) - 40)
    assert high == 1.0 and low == pytest.approx(wilson_interval(10, 10)[0])
