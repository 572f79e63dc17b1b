"""Exact anytime-valid confidence sequences of a binomial rate: beta-binomial mixture martingales (Robbins 1970;
Howard, Ramdas, McAuliffe & Sekhon 2021, "Time-uniform, nonparametric, nonasymptotic confidence sequences",
Ann. Statist. 49(2)). Against a rate r, the probability of k successes in n averaged over a beta prior, divided by
its probability at r, is a nonnegative martingale of mean 1 when r is the true rate, so by Ville's inequality it
reaches 1 / alpha with probability at most alpha at any n: the rates it has not rejected form a confidence sequence,
valid however often it is read and at any count (no normal approximation). The guardrails of ``core.experiments``
rest on them: the latency's (counts over a quantile) and the error rate's.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from shipml.core.sequential import mixture_rho

_BISECTIONS = 60  # halvings of a rate's bound: 1e-18 of its search interval
_RATE_BISECTIONS = 40  # the error rate's: 1e-12, far below any margin
# The error rate's exact sequences take a prior worth this many trials, centred on each rate they test: small, so a
# few hundred requests without an error bound a rate (460 show 0 errors within 1 point, against 560 with 100 trials
# and 1,150 with the latency guardrail's prior tuned for 10,000 units), and within 3 % of the tightest at 1,000 and
# 10,000 requests; any value keeps the guarantee.
RATE_PRIOR_TRIALS = 30.0


def beta_prior(rate: float, expected_n: float, alpha: float) -> tuple[float, float]:
    """Beta(a, b) with mean ``rate`` and the normal mixture's spread: the prior variance of the rate,
    rate (1 - rate) / (a + b + 1), is the mixture's per-unit variance times rho^2."""
    rho = mixture_rho(expected_n, alpha)
    size = max(1.0 / (rho * rho) - 1.0, 1.0)
    return size * rate, size * (1.0 - rate)


def log_mixture(rate: float, k: int, n: int, prior: tuple[float, float]) -> float:
    """log of the beta-binomial mixture martingale against ``rate`` after k successes in n: the data's
    probability averaged over the prior, divided by its probability at ``rate`` (Ville: >= 1/alpha with
    probability <= alpha at any n, when ``rate`` is the true one)."""
    if (k and rate <= 0.0) or (n > k and rate >= 1.0):
        return math.inf  # the data are impossible at ``rate`` (a bisection's midpoint can round to 0 or 1)
    a, b = prior
    mixture = _log_beta(a + k, b + n - k) - _log_beta(a, b)
    at_rate = (k * math.log(rate) if k else 0.0) + ((n - k) * math.log1p(-rate) if n > k else 0.0)
    return mixture - at_rate


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


def count_band(n: int, rate: float, prior: tuple[float, float], alpha: float) -> tuple[int, int]:
    """The counts k of n the mixture against ``rate`` does not reject at ``alpha``: an interval [lo, hi] (the log
    mixture is convex in k, lowest near rate (n - 1)); (0, n), no information, if it rejected every count."""
    limit = math.log(1.0 / alpha)

    def accepted(k: int) -> bool:
        return log_mixture(rate, k, n, prior) < limit

    centre = min(n, max(0, math.ceil(rate * (n - 1))))
    if not accepted(centre):
        return 0, n
    lo, hi = 0, centre  # the first accepted count is in (lo, hi], or 0
    if accepted(0):
        hi = 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if accepted(mid) else (mid, hi)
    first = hi
    lo, hi = centre, n  # the last accepted count is in [lo, hi), or n
    if accepted(n):
        lo = n
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if accepted(mid) else (lo, mid)
    return first, lo


def rate_bounds(k: int, n: int, prior: tuple[float, float], alpha: float) -> tuple[float, float]:
    """The beta-binomial confidence sequence of a rate after k successes in n: the rates the mixture does not
    reject at ``alpha``, an interval around k / n (the log mixture is convex in the rate, lowest there)."""
    limit = math.log(1.0 / alpha)
    return _unrejected(k, n, lambda rate: log_mixture(rate, k, n, prior) >= limit, _BISECTIONS)


def centred_rate_bounds(k: int, n: int, alpha: float) -> tuple[float, float]:
    """The rates r the beta-binomial mixture does not reject at ``alpha`` after k events in n, the mixture against
    each r taking the prior Beta(s r, s (1 - r)), s = ``RATE_PRIOR_TRIALS`` (fixed for each r before any data, so
    Ville's inequality holds for the true one): bisections from k / n outwards."""
    limit = math.log(1.0 / alpha)

    def rejected(rate: float) -> bool:
        prior = (RATE_PRIOR_TRIALS * rate, RATE_PRIOR_TRIALS * (1.0 - rate))
        return log_mixture(rate, k, n, prior) >= limit

    return _unrejected(k, n, rejected, _RATE_BISECTIONS)


def _unrejected(k: int, n: int, rejected: Callable[[float], bool], bisections: int) -> tuple[float, float]:
    """The interval of rates ``rejected`` spares around k / n, each end found by ``bisections`` halvings between
    the estimate (never rejected) and 0 or 1 (an end stays 0 with no successes, 1 with no failures)."""
    estimate = k / n
    lower, upper = 0.0, 1.0
    if k > 0:
        out, inside = 0.0, estimate
        for _ in range(bisections):
            mid = (out + inside) / 2.0
            out, inside = (mid, inside) if rejected(mid) else (out, mid)
        lower = out
    if k < n:
        inside, out = estimate, 1.0
        for _ in range(bisections):
            mid = (inside + out) / 2.0
            inside, out = (inside, mid) if rejected(mid) else (mid, out)
        upper = out
    return lower, upper
