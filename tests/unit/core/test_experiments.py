"""Experiment statistics: intervals equal scipy's and the textbook closed forms, the confidence sequence keeps its
promise under peeking where the fixed-horizon test does not, the latency guardrail keeps it too (in an A/A test and
at its margin, where a plug-in test does not), SRM makes an experiment unhealthy (never shipped), the sample size is
the textbook one, and every verdict is reached for the right reason."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from scipy.stats import binomtest, chisquare, norm

from shipml.core.experiments import (
    Comparison,
    Guardrail,
    SampleRatio,
    VariantStats,
    compare,
    decide,
    latency_guardrail,
    rate_guardrail,
    sample_ratio_mismatch,
    too_few,
    unit_stats,
    variant_stats,
)
from shipml.core.jsonable import from_jsonable
from shipml.core.sequential import (
    SRM_CONCENTRATIONS,
    fixed_halfwidth,
    mixture_rho,
    sample_size,
    sequential_halfwidth,
    sequential_halfwidth_at,
    sequential_z,
)
from shipml.core.units import UnitSums, per_unit

Z95 = norm.ppf(0.975)


def _binary(successes: int, n: int) -> np.ndarray:
    return np.concatenate([np.ones(successes), np.zeros(n - successes)])


def _rate(name: str, successes: int, n: int) -> VariantStats:
    return variant_stats(name, _binary(successes, n), "proportion")


def _primary(control: tuple[int, int], treatment: tuple[int, int], **kwargs: object) -> Comparison:
    return compare(_rate("champion", *control), _rate("challenger", *treatment), metric="accuracy", **kwargs)  # type: ignore[arg-type]


# --- per-variant intervals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("k", "n"), [(0, 10), (3, 10), (10, 10), (412, 1000), (9_990, 10_000)])
def test_a_proportions_interval_is_scipys_wilson(k: int, n: int) -> None:
    stats = variant_stats("champion", _binary(k, n).astype(bool), "proportion")
    expected = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert (stats.n, stats.mean, stats.kind, stats.method) == (n, k / n, "proportion", "wilson")
    assert stats.lower == pytest.approx(expected.low, abs=1e-9)
    assert stats.upper == pytest.approx(expected.high, abs=1e-9)
    # p(1 - p), except with no success or no failure yet (S3): then Agresti-Caffo's, never 0
    adjusted = (k + 1) / (n + 2)
    expected_variance = k / n * (1 - k / n) if 0 < k < n else adjusted * (1 - adjusted)
    assert stats.variance == pytest.approx(expected_variance, abs=1e-15) and stats.variance > 0


def test_a_means_interval_is_a_seeded_bootstrap_close_to_the_normal_one() -> None:
    values = np.random.default_rng(1).lognormal(3.0, 0.5, 2_000)  # skewed, like latency or revenue
    stats = variant_stats("champion", values, "mean")
    assert stats == variant_stats("champion", values, "mean")  # same seed, same interval
    assert stats != variant_stats("champion", values, "mean", seed=1)
    assert stats.method == "bootstrap"
    assert stats.mean == pytest.approx(values.mean(), abs=1e-12)
    assert stats.variance == pytest.approx(values.var(ddof=1), rel=1e-12)
    half = Z95 * values.std(ddof=1) / math.sqrt(len(values))
    assert stats.lower == pytest.approx(values.mean() - half, abs=0.1 * half)
    assert stats.upper == pytest.approx(values.mean() + half, abs=0.1 * half)
    large = np.random.default_rng(2).normal(5.0, 2.0, 200_001)  # past the bootstrap's size: the normal interval
    big = variant_stats("challenger", large, "mean")
    half = Z95 * large.std(ddof=1) / math.sqrt(len(large))
    assert big.method == "normal"
    assert big.lower == pytest.approx(large.mean() - half, abs=1e-9)
    assert big.upper == pytest.approx(large.mean() + half, abs=1e-9)


@pytest.mark.parametrize(
    ("outcomes", "kind", "message"),
    [
        ([0, 1, 2], "proportion", "variant 'challenger': a proportion's outcomes must be 0 or 1"),
        ([1.0, float("nan")], "mean", "variant 'challenger': 1 outcomes are NaN or infinite"),
        ([[1, 0]], "proportion", "variant 'challenger': outcomes must be 1-D"),
        ([1.0], "median", "variant 'challenger': kind must be 'proportion' or 'mean'"),
    ],
)
def test_bad_outcomes_name_the_variant(outcomes: list[object], kind: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        variant_stats("challenger", outcomes, kind)  # type: ignore[arg-type]


def test_a_variant_without_observations_has_no_numbers_and_serialises() -> None:
    empty = variant_stats("challenger", [], "proportion")
    assert empty.n == 0 and math.isnan(empty.mean) and math.isnan(empty.lower)
    comparison = compare(_rate("champion", 50, 100), empty)
    assert math.isnan(comparison.difference.estimate)
    text = json.dumps(comparison.to_dict(), allow_nan=False)
    assert json.loads(text)["treatment"]["mean"] is None


# --- difference and lift --------------------------------------------------------------------------------------


def test_fixed_horizon_difference_is_the_textbook_wald_interval() -> None:
    c = _primary((400, 1000), (460, 1000), fixed_horizon=True)
    se = math.sqrt(0.4 * 0.6 / 1000 + 0.46 * 0.54 / 1000)
    assert not c.sequential and c.rho is None and c.expected_n is None
    assert c.difference.estimate == pytest.approx(0.06, abs=1e-12)
    assert c.difference.std_error == pytest.approx(se, abs=1e-12)
    assert c.difference.lower == pytest.approx(0.06 - Z95 * se, abs=1e-9)
    assert c.difference.upper == pytest.approx(0.06 + Z95 * se, abs=1e-9)
    assert c.better and not c.worse
    rng = np.random.default_rng(3)
    a, b = rng.normal(10, 2, 300), rng.normal(10.5, 3, 500)
    means = compare(variant_stats("a", a, "mean"), variant_stats("b", b, "mean"), fixed_horizon=True, alpha=0.1)
    welch = math.sqrt(a.var(ddof=1) / 300 + b.var(ddof=1) / 500)  # Welch's (unequal variances) standard error
    assert means.difference.lower == pytest.approx(b.mean() - a.mean() - norm.ppf(0.95) * welch, abs=1e-9)


def test_relative_lift_is_the_delta_method_on_the_ratio_of_means() -> None:
    mc, mt, n = 0.2, 0.23, 5_000
    c = _primary((round(mc * n), n), (round(mt * n), n), fixed_horizon=True)
    vc, vt = mc * (1 - mc), mt * (1 - mt)
    se = math.sqrt(vt / (n * mc**2) + mt**2 * vc / (n * mc**4))
    assert c.relative_lift.estimate == pytest.approx(mt / mc - 1, abs=1e-12)
    assert c.relative_lift.std_error == pytest.approx(se, abs=1e-12)
    assert c.relative_lift.lower == pytest.approx(mt / mc - 1 - Z95 * se, abs=1e-9)
    # The first-order formula is the spread of the ratio itself: simulate both rates many times.
    rng = np.random.default_rng(4)
    ratios = rng.binomial(n, mt, 100_000) / rng.binomial(n, mc, 100_000)
    assert se == pytest.approx(ratios.std(), rel=0.02)
    assert math.isnan(_primary((0, 100), (5, 100)).relative_lift.estimate)  # control at 0: no lift


# --- the confidence sequence ----------------------------------------------------------------------------------


def test_the_sequence_is_the_msprt_boundary_of_johari_et_al() -> None:
    """0 leaves the interval exactly when the mixture likelihood ratio (mSPRT, normal mixture with variance tau^2 on
    the effect) reaches 1/alpha: Lambda = sqrt(V / (V + tau^2)) exp(tau^2 d^2 / (2 V (V + tau^2))), V = se^2."""
    alpha, n, se = 0.05, 4_000, 0.01
    rho = mixture_rho(10_000, alpha)
    half = float(sequential_halfwidth(se, n, alpha, rho))
    v, tau2 = se**2, (se**2 * n) * rho**2

    def likelihood_ratio(d: float) -> float:
        return math.sqrt(v / (v + tau2)) * math.exp(tau2 * d * d / (2 * v * (v + tau2)))

    assert likelihood_ratio(half) == pytest.approx(1 / alpha, rel=1e-9)
    assert likelihood_ratio(0.99 * half) < 1 / alpha < likelihood_ratio(1.01 * half)


def test_one_estimate_s_halfwidth_in_floats_is_the_array_formula_s() -> None:
    """The decision's per-look scalar path (``sequential_halfwidth_at``) against the array formula."""
    rng = np.random.default_rng(3)
    se, n = rng.uniform(1e-4, 2.0, 500), rng.integers(1, 10**7, 500)
    for alpha in (0.001, 0.05, 0.2):
        rho = mixture_rho(5_000, alpha)
        arrays = sequential_halfwidth(se, n, alpha, rho)
        floats = [sequential_halfwidth_at(float(s), float(k), alpha, rho) for s, k in zip(se, n, strict=True)]
        np.testing.assert_allclose(floats, arrays, rtol=1e-14, atol=0)
    assert math.isnan(sequential_halfwidth_at(0.1, 0, 0.05, 0.01))  # no units, no interval: as the array's NaN
    assert math.isnan(float(sequential_halfwidth(0.1, 0, 0.05, 0.01)))


def test_rho_makes_the_sequence_tightest_at_the_expected_size() -> None:
    alpha, expected, se = 0.05, 8_000, 0.02
    tuned = float(sequential_halfwidth(se, expected, alpha, mixture_rho(expected, alpha)))
    others = [
        float(sequential_halfwidth(se, expected, alpha, mixture_rho(expected, alpha) * f)) for f in (0.5, 0.8, 1.25, 2)
    ]
    assert tuned <= min(others)
    assert tuned == pytest.approx(sequential_z(alpha) * se, rel=1e-12)
    assert sequential_z(0.05) == pytest.approx(3.0352, abs=1e-4)  # vs 1.96: the price of looking at any time
    sizes = np.array([10, 100, 1_000, 8_000, 100_000, 10**7])
    assert (sequential_halfwidth(se, sizes, alpha, mixture_rho(expected, alpha)) > fixed_halfwidth(se, alpha)).all()


def test_compare_is_anytime_valid_by_default() -> None:
    c = _primary((400, 1000), (460, 1000), expected_n=5_000)
    assert c.sequential and c.expected_n == 5_000 and c.rho == mixture_rho(5_000, 0.05)
    half = float(sequential_halfwidth(c.difference.std_error, 2000, 0.05, mixture_rho(5_000, 0.05)))
    assert c.difference.upper - c.difference.estimate == pytest.approx(half, abs=1e-12)
    fixed = _primary((400, 1000), (460, 1000), fixed_horizon=True)
    assert c.difference.lower < fixed.difference.lower


def test_peeking_30_times_keeps_the_sequences_false_positives_under_5_percent() -> None:
    """2,000 A/A experiments (both variants convert at 20 %), data in 30 equal increments of 100 units per variant,
    checked after each: a false positive is any look whose interval excludes 0."""
    experiments, looks, per_look, alpha = 2_000, 30, 100, 0.05
    rng = np.random.default_rng(20_240_611)
    successes = rng.binomial(per_look, 0.2, size=(experiments, looks, 2)).cumsum(axis=1)
    per_variant = per_look * np.arange(1, looks + 1)[None, :, None]
    rate = successes / per_variant
    difference = rate[..., 1] - rate[..., 0]
    se = np.sqrt((rate * (1 - rate) / per_variant).sum(axis=-1))
    expected_n = 2 * per_look * looks
    sequence = sequential_halfwidth(se, 2 * per_variant[..., 0], alpha, mixture_rho(expected_n, alpha))
    naive = fixed_halfwidth(se, alpha)
    for e, look in [(0, 0), (17, 29), (1_999, 12)]:  # the vectorised intervals are compare()'s
        m = per_look * (look + 1)
        got = compare(_rate("a", successes[e, look, 0], m), _rate("b", successes[e, look, 1], m), expected_n=expected_n)
        assert got.difference.lower == pytest.approx(difference[e, look] - sequence[e, look], abs=1e-12)
    sequential_rate = float((np.abs(difference) > sequence).any(axis=1).mean())
    naive_rate = float((np.abs(difference) > naive).any(axis=1).mean())
    final_rate = float((np.abs(difference[:, -1]) > naive[:, -1]).mean())
    print(
        f"FIGURE experiments A/A peeking: {experiments} experiments x {looks} looks, false positives: "
        f"anytime-valid {sequential_rate:.1%}, fixed-horizon at every look {naive_rate:.1%} "
        f"(fixed-horizon at the last look only {final_rate:.1%})"
    )
    assert sequential_rate <= 0.05
    assert naive_rate > 0.15


# --- the latency guardrail ------------------------------------------------------------------------------------


def _lognormal(seed: int, n: int, scale: float = 1.0) -> np.ndarray:
    return scale * np.random.default_rng(seed).lognormal(3.0, 0.5, n)


def test_the_latency_guardrail_is_violated_by_a_slower_treatment_and_holds_for_an_equal_one() -> None:
    champion = _lognormal(1, 20_000)
    slower = latency_guardrail(champion, _lognormal(2, 20_000, scale=1.5), margin=0.01)
    # 6.5 % of the slower treatment's requests are over the champion's p99: 5.5 points more than its own 1 %
    d = norm.sf((0.5 * norm.ppf(0.99) - math.log(1.5)) / 0.5) - 0.01
    assert (slower.name, slower.status, slower.higher_is_better) == ("latency_p99", "violated", False)
    assert 0.01 < slower.lower < d < slower.upper < 0.1
    same = latency_guardrail(champion, _lognormal(3, 20_000), margin=0.01)
    assert same.status == "holds" and same.lower < 0.0 < same.upper <= 0.01
    assert latency_guardrail(champion, _lognormal(3, 20_000), margin=0.0).status == "undecided"  # none tolerated
    few = latency_guardrail(champion[:300], _lognormal(2, 300, scale=1.5), margin=0.01)
    assert few.status == "undecided"  # 300 requests say little about a p99
    # a batch's rows share one latency: ties at the p99 are fine (here every request took 1 ms)
    assert latency_guardrail(np.ones(2_000), np.ones(2_000), margin=0.01).status == "holds"
    assert latency_guardrail(np.ones(2_000), np.full(2_000, 2.0), margin=0.01).status == "violated"


def test_the_latency_guardrail_without_requests_or_with_bad_ones() -> None:
    empty = latency_guardrail([], [3.0, 4.0], margin=0.01)
    assert math.isnan(empty.lower) and empty.status == "undecided"
    assert json.loads(json.dumps(empty.to_dict(), allow_nan=False))["lower"] is None
    assert latency_guardrail([3.0], [], margin=0.01).status == "undecided"
    with pytest.raises(ValueError, match=re.escape("latencies of the treatment: 1 are NaN or infinite")):
        latency_guardrail([1.0], [1.0, float("nan")], margin=0.01)
    with pytest.raises(ValueError, match=re.escape("quantile: must be between 0 and 1 (exclusive), got 1.0")):
        latency_guardrail([1.0], [1.0], margin=0.01, quantile=1.0)


def test_peeking_at_the_latency_guardrail_keeps_its_promise_in_an_a_a_test_and_at_its_margin() -> None:
    """500 experiments x 10 looks (400 more requests a variant each time): a false "violated" is any look where it
    says violated, a miss any look where its interval leaves out the true d. A/A: d = 0. At the margin: the treatment
    has exactly 2 % of its requests over the champion's p99 (d = 0.01, still acceptable), where a plug-in test (both
    shares over the champion's estimated p99 compared as two proportions with ``compare``) misses more often than
    its 5 %, because the estimated p99 moves the treatment's share more than its variance allows. Exponential
    latencies: Exp(1) for the champion, Exp(ln 100 / ln 50) for the treatment at the margin."""
    experiments, looks, step, margin = 500, 10, 400, 0.01
    rng = np.random.default_rng(20_240_612)
    at_margin = math.log(100) / math.log(50)
    figures = []
    for scenario, scale, d in (("A/A", 1.0, 0.0), ("at the margin", at_margin, margin)):
        violated = missed = plug_in_missed = 0
        for _ in range(experiments):
            control, treatment = rng.exponential(1.0, looks * step), rng.exponential(scale, looks * step)
            said_violated = did_miss = plug_in_did_miss = False
            for look in range(1, looks + 1):
                c, t = control[: look * step], treatment[: look * step]
                g = latency_guardrail(c, t, margin)
                said_violated |= g.status == "violated"
                did_miss |= not g.lower <= d <= g.upper
                if d:
                    p99 = np.quantile(c, 0.99)
                    over = [variant_stats(n, (x > p99).astype(float), "proportion") for n, x in (("c", c), ("t", t))]
                    plug_in = compare(*over, higher_is_better=False).difference
                    plug_in_did_miss |= not plug_in.lower <= d <= plug_in.upper
            violated += said_violated
            missed += did_miss
            plug_in_missed += plug_in_did_miss
        figures.append((scenario, violated / experiments, missed / experiments, plug_in_missed / experiments))
        assert violated / experiments <= 0.05 and missed / experiments <= 0.05
    print(
        f"FIGURE latency guardrail peeking: {experiments} experiments x {looks} looks; "
        + "; ".join(f"{s}: violated {v:.1%}, interval missed d {m:.1%}" for s, v, m, _ in figures)
        + f" (a plug-in test missed it {figures[1][3]:.1%} at the margin)"
    )


# --- sample ratio mismatch ------------------------------------------------------------------------------------


def _log_evidence_by_hand(counts: list[int], shares: list[float], c: float) -> float:
    """ln of the Dirichlet(c shares)-multinomial Bayes factor against ``shares``, term by term."""
    a = [c * s for s in shares]
    mixture = sum(math.lgamma(ai + x) - math.lgamma(ai) for ai, x in zip(a, counts, strict=True))
    mixture += math.lgamma(c) - math.lgamma(c + sum(counts))
    return mixture - sum(x * math.log(s) for x, s in zip(counts, shares, strict=True))


def test_srm_is_the_dirichlet_multinomial_mixture_against_the_configured_weights() -> None:
    observed = {"champion": 8_890, "challenger": 1_050, "shadowless": 60}
    weights = {"champion": 0.89, "challenger": 0.105, "shadowless": 0.005}
    got = sample_ratio_mismatch(observed, weights)
    by_hand = [_log_evidence_by_hand([8_890, 1_050, 60], [0.89, 0.105, 0.005], c) for c in SRM_CONCENTRATIONS]
    log_e = math.log(sum(math.exp(v) for v in by_hand) / len(by_hand))
    assert got.statistic == pytest.approx(log_e, rel=1e-9)
    assert got.p_value == pytest.approx(min(1.0, math.exp(-log_e)), rel=1e-9)
    assert got.test == "sequential" and not got.mismatch and got.expected_share == (0.89, 0.105, 0.005)
    skewed = sample_ratio_mismatch({"champion": 9_250, "challenger": 750}, {"champion": 0.9, "challenger": 0.1})
    assert skewed.mismatch and skewed.p_value < 0.001
    json.dumps(skewed.to_dict(), allow_nan=False)


def test_srm_pays_for_being_valid_at_every_look() -> None:
    """A split the fixed chi-square calls a mismatch once (p = 0.0006) is not yet one for the sequential test, whose
    p-value holds over every look; a gross loss (a variant served nothing) is caught after a few dozen units."""
    split = {"champion": 5_170, "challenger": 4_830}
    weights = {"champion": 0.5, "challenger": 0.5}
    assert chisquare([5_170, 4_830]).pvalue < 0.001
    assert not sample_ratio_mismatch(split, weights).mismatch
    assert sample_ratio_mismatch({"champion": 50, "challenger": 0}, weights).mismatch
    assert not sample_ratio_mismatch({"champion": 10, "challenger": 0}, weights).mismatch


def test_a_stored_chi_square_srm_reads_back_as_one() -> None:
    old = {"variants": ["a", "b"], "observed": [10, 12], "expected_share": [0.5, 0.5], "statistic": 0.18,
           "p_value": 0.67, "threshold": 0.001, "mismatch": False}  # fmt: skip
    assert from_jsonable(SampleRatio, old).test == "chi-square"


def test_srm_edge_cases() -> None:
    weights = {"champion": 1.0, "challenger": 0.0}
    leaked = sample_ratio_mismatch({"champion": 100, "challenger": 1}, weights)  # weight 0 yet served
    assert leaked.mismatch and leaked.p_value == 0.0
    assert json.loads(json.dumps(leaked.to_dict(), allow_nan=False))["statistic"] is None
    assert not sample_ratio_mismatch({"champion": 100, "challenger": 0}, weights).mismatch
    assert not sample_ratio_mismatch({"champion": 0, "challenger": 0}, {"champion": 0.5, "challenger": 0.5}).mismatch
    with pytest.raises(ValueError, match="differ from variants with weights"):
        sample_ratio_mismatch({"champion": 1}, {"champion": 0.5, "challenger": 0.5})


# --- sample size ----------------------------------------------------------------------------------------------


def test_fixed_horizon_sample_size_is_the_textbook_formula() -> None:
    zsum = norm.ppf(0.975) + norm.ppf(0.8)
    got = sample_size(0.10, 0.02, relative=False, fixed_horizon=True)  # 10 % -> 12 %, absolute
    per_variant = zsum**2 * (0.1 * 0.9 + 0.12 * 0.88) / 0.02**2
    assert got.exact_total == pytest.approx(2 * per_variant, rel=1e-6)
    assert got.required_control == got.required_treatment == math.ceil(per_variant) == 3_839
    assert sample_size(0.10, 0.2, fixed_horizon=True).exact_total == pytest.approx(got.exact_total, rel=1e-12)
    # A mean, effect half a standard deviation: 2 (z + z)^2 / d^2 = 62.8 per group (63; a t-test's table says 64).
    mean = sample_size(100.0, 5.0, kind="mean", variance=100.0, relative=False, fixed_horizon=True)
    assert mean.exact_total / 2 == pytest.approx(2 * zsum**2 / 0.25, rel=1e-6)
    assert mean.required_control == 63
    # 10 % of the units in the treatment: N = zsum^2 (v / 0.9 + v / 0.1) / effect^2.
    canary = sample_size(
        100.0, 5.0, kind="mean", variance=100.0, relative=False, treatment_share=0.1, fixed_horizon=True
    )
    assert canary.exact_total == pytest.approx(zsum**2 * (100 / 0.9 + 100 / 0.1) / 25, rel=1e-6)
    partly = sample_size(0.10, 0.02, relative=False, fixed_horizon=True, observed=5_000)
    assert partly.remaining == got.required_total - 5_000
    assert sample_size(0.10, 0.02, relative=False, fixed_horizon=True, observed=10**6).remaining == 0


def test_a_proportions_sample_size_takes_the_measured_per_unit_variance() -> None:
    """Units of several predictions (keys): the units needed scale with the per-unit variance measured, here
    2.4 times the binomial one (5 predictions a key, within-key correlation 0.3)."""
    plain = sample_size(0.10, 0.02, relative=False, fixed_horizon=True)
    keyed = sample_size(0.10, 0.02, relative=False, fixed_horizon=True, variance=2.4 * 0.09)
    assert keyed.exact_total == pytest.approx(2.4 * plain.exact_total, rel=1e-12)


def test_anytime_valid_sample_size_gives_the_power_at_its_own_horizon() -> None:
    got = sample_size(0.10, 0.02, relative=False)
    fixed = sample_size(0.10, 0.02, relative=False, fixed_horizon=True)
    assert got.sequential and 1.8 < got.exact_total / fixed.exact_total < 2.0
    # At N with rho tuned for N, the interval's half-width plus z_power standard errors is exactly the effect.
    n = got.exact_total
    se = math.sqrt((0.1 * 0.9 + 0.12 * 0.88) / (n / 2))
    half = float(sequential_halfwidth(se, n, 0.05, mixture_rho(n, 0.05)))
    assert half + norm.ppf(0.8) * se == pytest.approx(0.02, rel=1e-9)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"baseline": 0.1, "mde": 0.0}, "mde: must be > 0"),
        ({"baseline": 0.95, "mde": 0.1, "relative": False}, "must be inside"),
        ({"baseline": 3.0, "mde": 0.1, "kind": "mean"}, "needs its per-unit variance"),
        ({"baseline": 0.1, "mde": 0.1, "power": 1.0}, "power: must be between 0 and 1"),
        ({"baseline": 0.0, "mde": 0.1, "kind": "mean", "variance": 1.0}, "give an absolute mde"),
    ],
)
def test_sample_size_refuses_impossible_plans(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sample_size(**kwargs)  # type: ignore[arg-type]


# --- the decision ---------------------------------------------------------------------------------------------

BETTER = ((4_000, 5_000), (4_250, 5_000))  # accuracy 80 % -> 85 %
WORSE = ((4_250, 5_000), (4_000, 5_000))
SAME = ((4_000, 5_000), (4_010, 5_000))
ERRORS_HOLD = Guardrail("error_rate", -0.002, 0.001, margin=0.005)
LATENCY_HOLDS = Guardrail("latency_p99", -0.01, 0.005, margin=0.01)
BALANCED = sample_ratio_mismatch({"champion": 5_020, "challenger": 4_980}, {"champion": 0.5, "challenger": 0.5})


def test_ship_when_better_and_every_guardrail_holds() -> None:
    guardrails = [ERRORS_HOLD, LATENCY_HOLDS, Guardrail.from_check("drift", False)]
    decision = decide(_primary(*BETTER), guardrails, BALANCED)
    assert decision.verdict == "ship"
    assert "significantly better" in decision.reasons[0] and "anytime-valid 95%" in decision.reasons[0]


def test_rollback_when_the_primary_is_significantly_worse() -> None:
    decision = decide(_primary(*WORSE), [ERRORS_HOLD], BALANCED)
    assert decision.verdict == "rollback" and "significantly worse" in decision.reasons[0]


@pytest.mark.parametrize(
    "violated",
    [
        Guardrail("error_rate", 0.03, 0.05, margin=0.005),  # 3-5 points more errors, 0.5 tolerated
        Guardrail("throughput", -0.5, -0.2, margin=0.1, higher_is_better=True),
        Guardrail.from_check("performance_drop", True),
    ],
)
def test_rollback_when_a_guardrail_is_violated_even_if_the_primary_is_better(violated: Guardrail) -> None:
    decision = decide(_primary(*BETTER), [ERRORS_HOLD, violated], BALANCED)
    assert decision.verdict == "rollback"
    assert decision.reasons == (f"guardrail {violated.name} [{violated.lower:+.4g}, {violated.upper:+.4g}] "
                                f"(margin {violated.margin:g}) is worse than its margin",)  # fmt: skip


def test_continue_while_undecided() -> None:
    same = decide(_primary(*SAME), [ERRORS_HOLD], BALANCED)
    assert same.verdict == "continue" and "not yet significant" in same.reasons[0]
    pending = decide(_primary(*BETTER), [Guardrail("error_rate", -0.01, 0.01, margin=0.005)], BALANCED)
    assert pending.verdict == "continue" and "error_rate" in pending.reasons[0]
    unjudged = decide(_primary(*BETTER), [Guardrail.from_check("drift", None)], BALANCED)
    assert unjudged.verdict == "continue"
    few = decide(_primary((5, 50), (49, 50)), [], None)  # "significant" on 50 units each: too few to trust
    assert few.verdict == "continue" and few.reasons == ("variant champion has 50 units, under the minimum 100",)
    assert decide(_primary((5, 50), (49, 50)), [], None, min_count=20).verdict == "ship"
    worse_few = decide(_primary((49, 50), (5, 50)), [], None)  # neither way: a rollback too waits for the minimum
    assert worse_few.verdict == "continue"


def test_no_data_when_a_variant_has_no_observations() -> None:
    primary = compare(_rate("champion", 40, 100), variant_stats("challenger", [], "proportion"))
    decision = decide(primary, [ERRORS_HOLD], None)
    assert decision == decide(primary, [], BALANCED)
    assert decision.verdict == "no_data" and decision.reasons == ("variant challenger has no observations of primary",)


@pytest.mark.parametrize("scenario", [BETTER, WORSE, SAME])
def test_srm_is_unhealthy_and_never_ships(scenario: tuple[tuple[int, int], tuple[int, int]]) -> None:
    srm = sample_ratio_mismatch({"champion": 5_000, "challenger": 4_500}, {"champion": 0.5, "challenger": 0.5})
    decision = decide(_primary(*scenario), [ERRORS_HOLD, LATENCY_HOLDS], srm)
    assert decision.verdict == "unhealthy"
    assert decision.reasons[0].startswith("sample ratio mismatch (sequential p = ")
    assert "champion 5000 (50.0% expected)" in decision.reasons[0]


def test_a_lower_is_better_primary_ships_when_it_goes_down() -> None:
    fewer_errors = compare(_rate("champion", 300, 5_000), _rate("challenger", 150, 5_000), higher_is_better=False)
    assert fewer_errors.better and decide(fewer_errors).verdict == "ship"
    assert (
        decide(compare(_rate("champion", 150, 5_000), _rate("challenger", 300, 5_000), higher_is_better=False)).verdict
        == "rollback"
    )


def test_guardrail_statuses_and_margins() -> None:
    assert Guardrail("errors", -0.01, 0.005, margin=0.005).status == "holds"  # the margin itself is tolerated
    assert Guardrail("errors", 0.006, 0.02, margin=0.005).status == "violated"
    assert Guardrail("errors", 0.001, 0.02, margin=0.005).status == "undecided"  # worse, not yet beyond the margin
    assert Guardrail("auc", -0.01, 0.01, margin=0.02, higher_is_better=True).status == "holds"
    assert Guardrail("auc", -0.05, -0.03, margin=0.02, higher_is_better=True).status == "violated"
    assert Guardrail("errors", float("nan"), float("nan")).status == "undecided"
    from_cmp = Guardrail.from_comparison(_primary(*WORSE), margin=0.01)
    assert (from_cmp.name, from_cmp.higher_is_better, from_cmp.status) == ("accuracy", True, "violated")
    assert Guardrail.from_check("drift", True).to_dict()["status"] == "violated"
    with pytest.raises(ValueError, match=re.escape("guardrail 'errors': margin must be >= 0, got -0.1")):
        Guardrail("errors", 0.0, 0.0, margin=-0.1)


def test_results_serialise_to_plain_json() -> None:
    primary = _primary(*BETTER)
    decision = decide(primary, [ERRORS_HOLD], BALANCED)
    payload = {
        "primary": primary.to_dict(),
        "decision": decision.to_dict(),
        "srm": BALANCED.to_dict(),
        "guardrails": [ERRORS_HOLD.to_dict()],
        "sample_size": sample_size(0.8, 0.05).to_dict(),
    }
    back = json.loads(json.dumps(payload, allow_nan=False))
    assert back["decision"] == {"verdict": "ship", "reasons": list(decision.reasons)}
    assert back["primary"]["difference"]["lower"] == primary.difference.lower
    assert back["primary"]["control"]["name"] == "champion"
    assert (back["primary"]["better"], back["primary"]["worse"]) == (True, False)
    assert back["guardrails"][0]["status"] == "holds"


# --- units: routing keys, the delta method ----------------------------------------------------------------------


def test_a_key_is_one_unit_and_a_keyless_request_is_one_too() -> None:
    sums = per_unit([1, 1, 0, 1, 0, 1], ["a", "a", "b", None, None, "a"])
    assert (sums.units, sums.observations, sums.total) == (4, 6.0, 4.0)  # a: 3 of 3, b: 0 of 1, two keyless
    assert (sums.total_sq, sums.observations_sq, sums.cross) == (9.0 + 0 + 1 + 0, 9.0 + 1 + 1 + 1, 9.0 + 0 + 1 + 0)


def test_the_delta_method_is_the_ratio_estimators_textbook_variance() -> None:
    """K Var(R) = Var(S - R N) / mean(N)^2 (the linearised ratio), and with one observation a unit it is the plain
    sample variance (so a mean's analysis is unchanged)."""
    rng = np.random.default_rng(3)
    counts = 1 + rng.poisson(4, size=500)
    sums = rng.normal(2.0, 1.0, size=500) * counts
    got = UnitSums.of(sums, counts)
    r = sums.sum() / counts.sum()
    assert got.mean == pytest.approx(r)
    assert got.unit_variance("mean") == pytest.approx(np.var(sums - r * counts, ddof=1) / counts.mean() ** 2)
    values = rng.normal(size=300)
    assert UnitSums.of(values, np.ones(300)).unit_variance("mean") == pytest.approx(np.var(values, ddof=1))


def test_a_proportions_variance_is_never_0_and_a_cluster_counts_once() -> None:
    """S3: an arm with no failure yet keeps the binomial variance at Agresti-Caffo's rate; S2: a key re-scored 10
    times, always right, is one unit: its ten 1s carry the weight of one key, not ten independent units."""
    perfect = unit_stats("challenger", per_unit(np.ones(200), [str(i) for i in range(200)]), "proportion")
    assert perfect.variance == pytest.approx(201 / 202 * (1 / 202)) and perfect.variance > 0
    keys = [str(i // 10) for i in range(1000)]  # 100 keys x 10 requests, the whole key right or wrong
    outcomes = np.repeat(np.random.default_rng(4).random(100) < 0.8, 10).astype(float)
    clustered = unit_stats("champion", per_unit(outcomes, keys), "proportion")
    independent = variant_stats("champion", outcomes, "proportion")
    assert (clustered.n, clustered.rows, clustered.method) == (100, 1000, "delta")
    assert clustered.variance / clustered.n == pytest.approx(10 * independent.variance / 1000 * 1000 / 999, rel=0.02)


def test_a_0_1_metric_decides_only_once_each_arm_expects_enough_rare_outcomes() -> None:
    """S3: at accuracy 0.995 a 1 % arm of 300 units expects 1.5 failures: no verdict, however the interval looks;
    a challenger that is always wrong is judged at once (the rare outcome is taken at the pooled rate)."""
    small = compare(_rate("champion", 29_850, 30_000), _rate("challenger", 300, 300))
    waiting = too_few(small)
    assert waiting is not None and waiting.startswith("variant challenger expects 1.5 failures at the pooled rate")
    assert decide(small, [], None).verdict == "continue"
    broken = compare(_rate("champion", 170, 200), _rate("challenger", 0, 200))
    assert too_few(broken) is None and decide(broken, [], None).verdict == "rollback"
    assert too_few(small, min_events=0) is None


def test_the_error_rate_guardrail_is_exact_per_arm() -> None:
    """S6: [L_t - U_c, U_t - L_c] from each arm's exact sequence at alpha / 2: a 1 % arm with no error in 300
    requests proves nothing; bounds contain each arm's rate."""
    g = rate_guardrail((150, 30_000), (0, 300), 0.01)
    assert g.status == "undecided" and g.lower < -0.004 and g.upper > 0.01
    assert rate_guardrail((150, 30_000), (0, 3_000), 0.01).status == "holds"
    assert rate_guardrail((150, 30_000), (60, 1_000), 0.01).status == "violated"
    assert math.isnan(rate_guardrail((0, 0), (1, 10), 0.01).lower)
    with pytest.raises(ValueError, match="between 0 and the trials"):
        rate_guardrail((5, 3), (0, 10), 0.01)
