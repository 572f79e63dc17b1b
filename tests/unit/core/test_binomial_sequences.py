"""The beta-binomial confidence sequences of a rate: bounds at the edges of [0, 1]."""

from __future__ import annotations

import math

from shipml.core.binomial_sequences import beta_prior, centred_rate_bounds, log_mixture, rate_bounds


def test_a_bound_searched_up_to_one_is_found_not_a_math_error() -> None:
    # A canary's latency guardrail with few requests: 9 of 10 past the champion's quantile against a prior centred
    # on 1 %. The upper bound's bisection goes towards 1 until its midpoint rounds to 1.0 (log1p(-1) raised).
    prior = beta_prior(0.01, 1000, 0.5)
    lower, upper = rate_bounds(9, 10, prior, 0.5)
    assert 0.0 < lower < 0.9 < upper <= 1.0


def test_a_rate_the_data_rule_out_is_rejected() -> None:
    prior = (1.0, 1.0)
    assert log_mixture(1.0, 3, 4, prior) == math.inf  # a failure was seen: the rate is not 1
    assert log_mixture(0.0, 1, 4, prior) == math.inf  # a success was seen: the rate is not 0
    assert math.isfinite(log_mixture(1.0, 4, 4, prior)) and math.isfinite(log_mixture(0.0, 0, 4, prior))


def test_every_count_of_a_small_sample_has_bounds_around_its_estimate() -> None:
    for rate in (0.01, 0.5, 0.99):
        prior = beta_prior(rate, 1000, 0.5)
        for n in range(1, 13):
            for k in range(n + 1):
                lower, upper = rate_bounds(k, n, prior, 0.5)
                assert 0.0 <= lower <= k / n <= upper <= 1.0
                lower, upper = centred_rate_bounds(k, n, 0.05)
                assert 0.0 <= lower <= k / n <= upper <= 1.0
