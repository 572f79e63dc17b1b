"""Realised and estimated performance: values equal scikit-learn's, intervals cover at their nominal rate,
estimates are refused for uncalibrated models, and a drop is flagged only when it is real."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest, norm
from sklearn import metrics as skm

from shipml.core.performance import (
    PerformanceEstimate,
    PerformanceOptions,
    calibration_error,
    estimated_performance,
    expected_calibration_error,
    performance_drop,
    realised_performance,
    wilson_interval,
)

RUNS = 200  # seeded repetitions of each coverage simulation


def _by_metric(estimates: tuple[PerformanceEstimate, ...]) -> dict[str, PerformanceEstimate]:
    return {e.metric: e for e in estimates}


def _binary_window(seed: int, n: int = 300) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels drawn from calibrated probabilities; the predicted label is the argmax."""
    rng = np.random.default_rng(seed)
    p = rng.beta(1.0, 2.5, n)
    return (rng.random(n) < p).astype(int), (p > 0.5).astype(int), p


# --- values -----------------------------------------------------------------------------------------------


def test_binary_values_equal_sklearns_with_string_labels_and_tied_scores() -> None:
    y, pred, p = _binary_window(1, 400)
    names = np.array(["stayed", "churned"])
    score = np.round(p, 1)  # ties, as a tree model gives
    got = _by_metric(realised_performance("binary", names[y], names[pred], score, positive="churned"))
    assert set(got) == {"accuracy", "f1", "roc_auc"}
    assert got["accuracy"].value == pytest.approx(skm.accuracy_score(y, pred), abs=1e-12)
    assert got["f1"].value == pytest.approx(skm.f1_score(y, pred), abs=1e-12)
    assert got["roc_auc"].value == pytest.approx(skm.roc_auc_score(y, score), abs=1e-12)
    assert all(e.kind == "realised" and e.count == 400 and e.enough_data for e in got.values())
    assert [got[m].method for m in ("accuracy", "f1", "roc_auc")] == ["wilson", "wilson-jaccard", "delong"]
    for e in got.values():
        assert e.lower is not None and e.upper is not None and e.value is not None
        assert e.lower <= e.value <= e.upper


def test_f1_of_the_positive_class_not_the_second_label() -> None:
    y, pred, _ = _binary_window(2)
    got = _by_metric(realised_performance("binary", y, pred, positive=0))
    assert got["f1"].value == pytest.approx(skm.f1_score(y, pred, pos_label=0), abs=1e-12)
    assert got["f1"].value != pytest.approx(skm.f1_score(y, pred, pos_label=1))
    assert "roc_auc" not in got  # no score given


def test_multiclass_macro_f1_and_regression_equal_sklearns() -> None:
    rng = np.random.default_rng(3)
    yt, yp = rng.integers(0, 4, 250), rng.integers(0, 3, 250)  # class 3 is never predicted
    got = _by_metric(realised_performance("multiclass", yt, yp))
    assert got["accuracy"].value == pytest.approx(skm.accuracy_score(yt, yp), abs=1e-12)
    assert got["f1"].value == pytest.approx(skm.f1_score(yt, yp, average="macro", zero_division=0), abs=1e-12)
    truth, value = rng.normal(10, 3, 250), rng.normal(10, 3, 250)
    reg = _by_metric(realised_performance("regression", truth, value))
    assert reg["rmse"].value == pytest.approx(np.sqrt(skm.mean_squared_error(truth, value)), abs=1e-12)
    assert reg["mae"].value == pytest.approx(skm.mean_absolute_error(truth, value), abs=1e-12)


def test_under_the_minimum_count_the_value_is_shown_but_flagged() -> None:
    y, pred, p = _binary_window(4, 40)
    got = realised_performance("binary", y, pred, p, positive=1, options=PerformanceOptions(min_count=100))
    assert all(e.value is not None and not e.enough_data and e.count == 40 for e in got)


def test_roc_auc_of_a_one_class_window_is_refused_with_the_reason() -> None:
    auc = _by_metric(realised_performance("binary", np.ones(50), np.ones(50), np.full(50, 0.7), positive=1))["roc_auc"]
    assert auc.value is None
    assert (
        auc.refused
        == "roc_auc needs labelled rows of both classes with a score; the window has 50 positive and 0 negative"
    )
    empty = realised_performance("binary", np.array([]), np.array([]), np.array([]), positive=1)
    assert all(e.value is None and e.refused and e.count == 0 for e in empty)


def test_the_same_seed_gives_the_same_interval() -> None:
    y, pred, p = _binary_window(5)
    assert realised_performance("binary", y, pred, p, positive=1) == realised_performance(
        "binary", y, pred, p, positive=1
    )


# --- Wilson -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("k", "n", "lower", "upper"),
    # Newcombe (1998), Statistics in Medicine 17:857, table I, method 3 (score interval without correction)
    [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718)],
)
def test_wilson_interval_equals_the_textbook_and_scipys(k: int, n: int, lower: float, upper: float) -> None:
    got = wilson_interval(k, n)
    assert got == pytest.approx((lower, upper), abs=5e-5)
    scipy_ci = binomtest(k, n).proportion_ci(0.95, method="wilson")  # statsmodels is not installed
    assert got == pytest.approx((scipy_ci.low, scipy_ci.high), abs=1e-9)


# --- coverage of the realised intervals -------------------------------------------------------------------


def test_realised_intervals_cover_the_true_value_at_about_the_nominal_rate() -> None:
    """Binormal scores (true AUC = Phi(d / sqrt 2)), a known confusion structure (true f1 from its rates),
    a known accuracy, normal errors (true rmse = sigma, mae = sigma sqrt(2 / pi))."""
    d, prevalence, tpr, fpr, sigma, n = 1.2, 0.4, 0.7, 0.15, 2.0, 300
    truth = {
        "roc_auc": norm.cdf(d / np.sqrt(2)),
        "f1": 2 * prevalence * tpr / (prevalence + prevalence * tpr + (1 - prevalence) * fpr),
        "accuracy": prevalence * tpr + (1 - prevalence) * (1 - fpr),
        "rmse": sigma,
        "mae": sigma * np.sqrt(2 / np.pi),
    }
    covered = dict.fromkeys(truth, 0)
    for seed in range(RUNS):
        rng = np.random.default_rng(1000 + seed)
        y = rng.random(n) < prevalence
        score = rng.normal(np.where(y, d, 0.0), 1.0)
        pred = rng.random(n) < np.where(y, tpr, fpr)
        got = _by_metric(realised_performance("binary", y, pred, score, positive=True))
        got |= _by_metric(realised_performance("regression", np.zeros(n), rng.normal(0, sigma, n)))
        for metric, value in truth.items():
            e = got[metric]
            covered[metric] += int(e.lower is not None and e.upper is not None and e.lower <= value <= e.upper)
    rates = {m: c / RUNS for m, c in covered.items()}
    assert all(rate >= 0.90 for rate in rates.values()), rates
    assert all(rate <= 0.99 for rate in rates.values()), rates  # not trivially wide


# --- calibration ------------------------------------------------------------------------------------------


def test_ece_by_hand_with_equal_mass_bins_that_keep_ties_together() -> None:
    confidence = np.array([0.1, 0.2, 0.2, 0.2, 0.6, 0.8])
    outcome = np.array([0, 0, 1, 0, 1, 1])
    # 3 bins of 2 rows would split the three 0.2s: the cut moves past them -> bins {0.1, 0.2 x3}, {0.6, 0.8}
    first = abs(1 - (0.1 + 0.6)) / 4  # observed 1 of 4, mean confidence 0.175
    second = abs(2 - (0.6 + 0.8)) / 2
    expected = (4 * first + 2 * second) / 6
    assert expected_calibration_error(outcome, confidence, bins=3) == pytest.approx(expected, abs=1e-12)
    shuffled = np.array([3, 1, 5, 0, 2, 4])  # the order of rows does not matter, even among ties
    assert expected_calibration_error(outcome[shuffled], confidence[shuffled], bins=3) == pytest.approx(expected)
    assert expected_calibration_error(outcome, confidence, bins=1) == pytest.approx(abs(3 - 2.1) / 6)


def test_calibration_error_is_near_zero_for_calibrated_holdouts_and_the_ece_for_large_miscalibrated_ones() -> None:
    rng = np.random.default_rng(6)
    small = []
    for _ in range(RUNS):  # the example's holdout size: the raw ECE is about 0.05 here from noise alone
        p = rng.beta(1, 3, 400)
        y = rng.random(400) < p
        small.append((expected_calibration_error(y, p), calibration_error(y, p)))
    raw, corrected = np.array(small).T
    # measured over 1,000 runs: raw > 0.05 in 37 % of them, corrected in 4 % (uniform scores: 48 % and 6 %)
    assert np.mean(raw > 0.05) > 0.25
    assert np.mean(corrected > 0.05) <= 0.08
    q = rng.beta(1, 3, 100_000)
    y, p = rng.random(100_000) < q, np.clip(q + 0.08, 0, 1)  # over-confident by 0.08
    assert calibration_error(y, p) == pytest.approx(expected_calibration_error(y, p), abs=0.002)
    assert calibration_error(y, p) == pytest.approx(0.08, abs=0.005)


# --- estimated (CBPE) -------------------------------------------------------------------------------------


def test_estimates_on_calibrated_probabilities_hold_the_realised_values_in_their_intervals() -> None:
    inside = {"accuracy": 0, "roc_auc": 0, "f1": 0}
    for seed in range(RUNS):
        y, pred, p = _binary_window(2000 + seed, 400)
        realised = _by_metric(realised_performance("binary", y, pred, p, positive=1))
        estimated = _by_metric(estimated_performance("binary", p, calibration_error=0.01))
        for metric in inside:
            e, r = estimated[metric], realised[metric].value
            assert e.kind == "estimated" and e.lower is not None and e.upper is not None and r is not None
            inside[metric] += int(e.lower <= r <= e.upper)
    rates = {m: c / RUNS for m, c in inside.items()}
    assert all(rate >= 0.90 for rate in rates.values()), rates


def test_expected_accuracy_and_auc_follow_their_definitions() -> None:
    p = np.array([0.9, 0.8, 0.3, 0.3, 0.1, 0.6])
    got = _by_metric(estimated_performance("binary", p, calibration_error=0.0))
    assert got["accuracy"].value == pytest.approx(np.mean(np.maximum(p, 1 - p)), abs=1e-12)
    # as if each row were p of a positive and 1 - p of a negative: sklearn's AUC of the doubled, weighted rows
    doubled = np.r_[p, p]
    weighted = skm.roc_auc_score(np.r_[np.ones(6), np.zeros(6)], doubled, sample_weight=np.r_[p, 1 - p])
    assert got["roc_auc"].value == pytest.approx(weighted, abs=1e-12)
    tp, fp, fn = 0.9 + 0.8 + 0.6, 0.1 + 0.2 + 0.4, 0.3 + 0.3 + 0.1
    assert got["f1"].value == pytest.approx(2 * tp / (2 * tp + fp + fn), abs=1e-12)
    # the model's own decisions, when given, replace the 0.5 threshold
    flipped = _by_metric(estimated_performance("binary", p, 0.0, predicted_positive=p > 0.85))
    assert flipped["accuracy"].value == pytest.approx(np.mean([0.9, 0.2, 0.7, 0.7, 0.9, 0.4]), abs=1e-12)
    top = np.array([0.5, 0.9, 0.4, np.nan])  # multiclass: the predicted class's probability; NaN: absent
    multi = estimated_performance("multiclass", top, 0.0)
    assert [(e.metric, e.count) for e in multi] == [("accuracy", 3)]
    assert multi[0].value == pytest.approx(0.6, abs=1e-12)


def test_estimates_are_refused_when_the_holdout_shows_uncalibrated_probabilities() -> None:
    rng = np.random.default_rng(8)
    q = rng.beta(1, 3, 2000)
    y = rng.random(2000) < q
    overconfident = np.clip(q + 0.15, 0, 1)
    error = calibration_error(y, overconfident)
    assert error > 0.05
    got = estimated_performance("binary", overconfident, error)
    assert [e.metric for e in got] == ["accuracy", "f1", "roc_auc"]
    assert all(e.value is None and e.lower is None and e.count == 2000 for e in got)
    assert got[0].refused == (
        f"the version's holdout calibration_error {error:.4f} is above the maximum 0.05: its probabilities are "
        "not calibrated, so estimates from them would be biased; calibrate the model or rely on realised performance"
    )
    unknown = estimated_performance("binary", q, None)
    assert unknown[0].refused is not None and "no recorded holdout calibration_error" in unknown[0].refused
    assert estimated_performance("binary", q, calibration_error(y, q))[0].value is not None
    regression = estimated_performance("regression", q, 0.0)
    assert [e.metric for e in regression] == ["rmse", "mae"] and all(e.refused for e in regression)


# --- drop -------------------------------------------------------------------------------------------------


def test_a_real_drop_is_flagged_and_noise_is_not() -> None:
    holdout, tolerance, n = 0.85, 0.02, 200
    rng = np.random.default_rng(9)
    flagged = by_point = 0
    for _ in range(RUNS):  # windows of a model exactly as good as on its holdout
        correct = rng.random(n) < holdout
        accuracy = _by_metric(realised_performance("multiclass", correct, np.ones(n, dtype=bool)))["accuracy"]
        flagged += performance_drop(accuracy, holdout, tolerance, lower_is_better=False).flagged
        by_point += accuracy.value is not None and accuracy.value < holdout - tolerance
    assert flagged / RUNS <= 0.05
    assert by_point / RUNS > 0.15  # comparing the point value alone would cry wolf
    worse = rng.random(2000) < 0.78
    worse_accuracy = _by_metric(realised_performance("multiclass", worse, np.ones(2000, dtype=bool)))["accuracy"]
    assert worse_accuracy.value is not None and worse_accuracy.upper is not None
    drop_bound = worse_accuracy.upper - holdout
    drop = performance_drop(
        worse_accuracy,
        holdout,
        tolerance,
        lower_is_better=False,
    )
    assert drop.flagged
    assert drop.reason.startswith("realised accuracy 0.7")
    assert " is below holdout 0.8500 (taken as exact: the version has no recorded holdout interval) by more " in (
        drop.reason
    )
    assert drop.reason.endswith(f"than 0.02: the upper bound of the difference is {drop_bound:+.4f}")


def test_the_holdouts_own_interval_enters_the_comparison() -> None:
    """A window 0.07 under the holdout value is a drop when the holdout is exact, not when the holdout's own
    interval (a 400-row holdout's f1) reaches down to the window: MOVER's bound of the difference."""
    window = PerformanceEstimate("f1", 0.60, 0.585, 0.615, 5000, "realised")
    assert performance_drop(window, 0.67, 0.05, lower_is_better=False).flagged
    lucky = performance_drop(window, 0.67, 0.05, lower_is_better=False, holdout_interval=(0.60, 0.73))
    assert not lucky.flagged
    # upper bound of window - holdout: -0.07 + sqrt(0.015^2 + 0.07^2)
    assert lucky.reason.endswith(
        f"[0.6000, 0.7300] by more than 0.05: the upper bound of the difference is {-0.07 + (0.015**2 + 0.07**2) ** 0.5:+.4f}"
    )
    assert performance_drop(window, 0.67, 0.05, False, holdout_interval=(0.665, 0.675)).flagged  # a tight holdout
    rmse = PerformanceEstimate("rmse", 2.0, 1.9, 2.1, 500, "realised")
    assert performance_drop(rmse, 1.75, 0.1, lower_is_better=True).flagged
    assert not performance_drop(rmse, 1.75, 0.1, lower_is_better=True, holdout_interval=(1.55, 1.95)).flagged


def test_a_drop_in_a_lower_is_better_metric_uses_the_lower_bound() -> None:
    rmse = PerformanceEstimate("rmse", 2.0, 1.7, 2.3, 500, "realised")
    assert performance_drop(rmse, 1.5, 0.1, lower_is_better=True).flagged
    assert not performance_drop(rmse, 1.65, 0.1, lower_is_better=True).flagged


def test_windows_that_cannot_be_judged_are_not_flagged() -> None:
    few = PerformanceEstimate("accuracy", 0.2, 0.05, 0.5, 12, "realised", enough_data=False)
    assert performance_drop(few, 0.9, 0.05, lower_is_better=False) == performance_drop(few, 0.9, 0.05, False)
    assert not performance_drop(few, 0.9, 0.05, lower_is_better=False).flagged
    refused = PerformanceEstimate("roc_auc", None, None, None, 0, "estimated", False, refused="uncalibrated")
    verdict = performance_drop(refused, 0.9, 0.05, lower_is_better=False)
    assert not verdict.flagged and verdict.reason == "not judged: uncalibrated"
