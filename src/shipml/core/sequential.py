"""Anytime-valid confidence sequences for an experiment's effect, and the sample size an effect needs.

Why: a fixed-horizon 95 % interval is valid once, at a sample size fixed in advance. An experimenter who looks every
day and stops the first time it excludes 0 is fooled far more often than 5 % of the time (about a quarter of A/A
experiments after 30 looks). A confidence sequence covers the true effect at every look at once,
P(exists n: effect outside C_n) <= alpha, so it may be read continuously and the experiment stopped on any rule.

What is implemented: the two-sided normal-mixture boundary (Robbins 1970; Howard, Ramdas, McAuliffe & Sekhon 2021,
"Time-uniform, nonparametric, nonasymptotic confidence sequences", Ann. Statist. 49(2)) used as the asymptotic
confidence sequence of Waudby-Smith, Arbour, Sinha, Kennedy & Ramdas (2024), "Time-uniform central limit theory and
asymptotic confidence sequences", Ann. Statist., Theorem 2.2 (the construction behind GrowthBook's sequential engine).
For an estimate from n units with estimated variance se^2 (so a per-unit standard deviation sigma = se sqrt(n)):

    half-width(n) = sigma * sqrt( 2 (n rho^2 + 1) / (n^2 rho^2) * ln( sqrt(n rho^2 + 1) / alpha ) )

Read as a test it is the mSPRT of Johari, Pekelis & Walsh (2017) with mixing variance tau^2 = sigma^2 rho^2: 0 leaves
the interval exactly when the mixture likelihood ratio reaches 1 / alpha.

rho only moves where the sequence is tightest; every rho > 0 keeps the guarantee. ``mixture_rho`` takes
rho^2 = (-2 ln alpha + ln(1 - 2 ln alpha)) / N*, the approximate minimiser of the width at N* units (Waudby-Smith et
al.; GrowthBook's choice). At n = N* the half-width is then ``sequential_z(alpha)`` standard errors (3.04 at
alpha = 0.05, instead of 1.96): the price of being allowed to look at any time.

For two variants, n is the total of units of both: the difference in means (and, by the delta method, the relative
lift) is asymptotically linear in the units with per-unit variance n * se^2, which is what the theorem needs. The
guarantee is asymptotic (it rests on the central limit theorem), so verdicts wait for a minimum count per variant.

The sample-ratio test is sequential too (``multinomial_log_evidence``): the Dirichlet-multinomial mixture of
Lindon & Malek (2022), "Anytime-valid inference for multinomial count data", NeurIPS. Each unit falls in variant i
with probability theta_i; under the configured shares theta_0 the Bayes factor of a Dirichlet(c theta_0) mixture
against theta_0,

    E_n = [B(c theta_0 + x_n) / B(c theta_0)] / prod_i theta_0i^x_ni    (B: the multivariate beta function),

is a nonnegative martingale of mean 1 in the units, so by Ville's inequality P(exists n: E_n >= 1 / level) <= level:
1 / E_n is a p-value valid at every look at once (a fixed chi-square re-run at every report is not: its false alarms
grow with the looks). c sets the deviations the test is quickest on (about 1 / sqrt(c) in share); an equal-weight
average over c in 10..100,000 (still a mean-1 martingale) catches a variant that gets nothing after a few dozen
units and a 1 % loss of a variant's units within a few hundred thousand, for at most ln 5 of evidence.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from numpy.typing import ArrayLike

Floats = npt.NDArray[np.float64]
Kind = Literal["proportion", "mean"]  # of a metric: a rate of 0/1 outcomes, or the mean of continuous values

# The Dirichlet concentrations the sample-ratio test averages over (see the module docstring).
SRM_CONCENTRATIONS = (1e1, 1e2, 1e3, 1e4, 1e5)


@dataclass(frozen=True)
class SampleSize:
    """Units needed to detect ``effect`` (absolute, in the metric's units; from ``mde``, relative to the baseline
    when ``relative``) with the given power; ``remaining`` = required_total - observed, at least 0."""

    kind: Kind
    baseline: float
    mde: float
    relative: bool
    effect: float
    alpha: float
    power: float
    treatment_share: float
    sequential: bool
    exact_total: float
    required_control: int
    required_treatment: int
    required_total: int
    observed: int
    remaining: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@functools.lru_cache(maxsize=256)
def z_quantile(probability: float) -> float:
    """The standard normal quantile (the standard library's: scipy.stats costs half a second to import); a report
    asks for the same few levels at every look, so they are kept."""
    return NormalDist().inv_cdf(probability)


def mixture_rho(expected_n: float, alpha: float) -> float:
    """The mixture's tuning parameter rho for a sequence tightest near ``expected_n`` total units."""
    _check_alpha(alpha)
    if not expected_n > 0:
        raise ValueError(f"expected_n: must be > 0, got {expected_n}")
    a = -2.0 * math.log(alpha)
    return math.sqrt((a + math.log(a + 1.0)) / expected_n)


def sequential_halfwidth(std_error: ArrayLike, n: ArrayLike, alpha: float, rho: float) -> Floats:
    """Half-width of the (1 - alpha) normal-mixture confidence sequence (formula in the module docstring) for an
    estimate with standard error ``std_error`` from ``n`` units; element-wise over arrays."""
    _check_alpha(alpha)
    if not rho > 0:
        raise ValueError(f"rho: must be > 0, got {rho}")
    se = np.asarray(std_error, dtype=np.float64)
    t = np.asarray(n, dtype=np.float64)
    t_rho2 = t * rho * rho
    with np.errstate(divide="ignore", invalid="ignore"):  # n = 0: no interval (NaN)
        width = np.sqrt(2.0 * (t_rho2 + 1.0) / (t * t_rho2) * np.log(np.sqrt(t_rho2 + 1.0) / alpha))
        return np.asarray(se * np.sqrt(t) * width, dtype=np.float64)


def sequential_halfwidth_at(std_error: float, n: float, alpha: float, rho: float) -> float:
    """``sequential_halfwidth`` of one estimate, in floats: an experiment's decision at each look asks for one or
    two, and numpy's arrays and error state cost more than the arithmetic (10 us a call against 2)."""
    _check_alpha(alpha)
    if not rho > 0:
        raise ValueError(f"rho: must be > 0, got {rho}")
    if not n > 0:
        return math.nan  # no units: no interval
    t_rho2 = n * rho * rho
    return (
        std_error
        * math.sqrt(n)
        * math.sqrt(2.0 * (t_rho2 + 1.0) / (n * t_rho2) * math.log(math.sqrt(t_rho2 + 1.0) / alpha))
    )


def fixed_halfwidth(std_error: ArrayLike, alpha: float) -> Floats:
    """Half-width of the classic (1 - alpha) normal interval: valid at one sample size chosen in advance."""
    _check_alpha(alpha)
    return np.asarray(z_quantile(1.0 - alpha / 2.0) * np.asarray(std_error, dtype=np.float64), dtype=np.float64)


def sequential_z(alpha: float) -> float:
    """The confidence sequence's half-width in standard errors at the horizon its rho was tuned for; the same for
    every N* because n rho^2 is then a constant c = -2 ln alpha + ln(1 - 2 ln alpha)."""
    _check_alpha(alpha)
    a = -2.0 * math.log(alpha)
    c = a + math.log(a + 1.0)
    return math.sqrt(2.0 * (c + 1.0) / c * math.log(math.sqrt(c + 1.0) / alpha))


def required_units(effect: float, unit_variance: float, alpha: float, power: float, fixed_horizon: bool) -> float:
    """Total units (unrounded) for a two-sided test at level ``alpha`` to detect ``effect`` with ``power``:
    N = ((z_crit + z_power) / effect)^2 * unit_variance, where unit_variance = N * Var(estimate) and z_crit is
    z_(1 - alpha/2) for the fixed horizon, or ``sequential_z(alpha)`` for the confidence sequence tuned at N* = N
    (plan an anytime-valid experiment with ``expected_n`` set to this total)."""
    _check_alpha(alpha)
    if not 0.0 < power < 1.0:
        raise ValueError(f"power: must be between 0 and 1 (exclusive), got {power}")
    if effect == 0.0:
        raise ValueError("the minimum detectable effect must not be 0")
    critical = z_quantile(1.0 - alpha / 2.0) if fixed_horizon else sequential_z(alpha)
    return (critical + z_quantile(power)) ** 2 * unit_variance / (effect * effect)


def sample_size(
    baseline: float,
    mde: float,
    *,
    kind: Kind = "proportion",
    variance: float | None = None,
    relative: bool = True,
    higher_is_better: bool = True,
    alpha: float = 0.05,
    power: float = 0.8,
    treatment_share: float = 0.5,
    fixed_horizon: bool = False,
    observed: int = 0,
) -> SampleSize:
    """Units needed to detect a change of ``mde`` from ``baseline`` (the control's mean), two-sided at ``alpha``, with ``power``, a share ``treatment_share`` of the units in
    the treatment. Proportion: the variances are p(1 - p) at the baseline and at the changed rate (the unpooled
    textbook formula), or, given the measured per-unit ``variance`` (units of several predictions, see
    ``core.units``), that one at the baseline, scaled by the same ratio at the changed rate; mean: both ``variance``. Total N = (z_crit + z_power)^2 (v_c / (1 - s) + v_t / s) / effect^2,
    z_crit = z_(1 - alpha/2), or the confidence sequence's critical value unless ``fixed_horizon`` (see
    ``required_units``).

    ``mde`` is relative by default (0.05: 5 % of the baseline, so 0.80 -> 0.84); absolute with ``relative=False``
    (0.05: 0.80 -> 0.85). The change is taken in the good direction (``higher_is_better``)."""
    if not mde > 0:
        raise ValueError(f"mde: must be > 0, got {mde}")
    if not 0.0 < treatment_share < 1.0:
        raise ValueError(f"treatment_share: must be between 0 and 1 (exclusive), got {treatment_share}")
    effect = mde * abs(baseline) if relative else mde
    if effect == 0.0:
        raise ValueError("a relative mde of a baseline of 0 is no effect at all: give an absolute mde")
    changed = baseline + effect if higher_is_better else baseline - effect
    if kind == "proportion":
        if not (0.0 < baseline < 1.0 and 0.0 < changed < 1.0):
            raise ValueError(f"a proportion's baseline {baseline} and changed rate {changed} must be inside (0, 1)")
        vc, vt = baseline * (1.0 - baseline), changed * (1.0 - changed)
        if variance is not None and variance > 0:  # measured per unit (a key of several predictions)
            vc, vt = variance, vt * variance / vc
    elif variance is None or not variance > 0:
        raise ValueError(f"a mean's sample size needs its per-unit variance > 0, got {variance}")
    else:
        vc = vt = variance
    unit_variance = vc / (1.0 - treatment_share) + vt / treatment_share
    total = required_units(effect, unit_variance, alpha, power, fixed_horizon)
    n_control, n_treatment = math.ceil(total * (1.0 - treatment_share)), math.ceil(total * treatment_share)
    return SampleSize(
        kind, baseline, mde, relative, effect, alpha, power, treatment_share, not fixed_horizon, total, n_control,
        n_treatment, n_control + n_treatment, observed, max(0, n_control + n_treatment - observed),
    )  # fmt: skip


def multinomial_log_evidence(
    counts: ArrayLike, shares: ArrayLike, concentrations: tuple[float, ...] = SRM_CONCENTRATIONS
) -> Floats:
    """ln E_n, the anytime-valid evidence against ``shares`` after ``counts`` units per category (formula in the
    module docstring): ``counts`` (..., k) with the categories last (several looks or runs at once), ``shares``
    (k,) positive and summing to 1. Its p-value is min(1, exp(-ln E_n)); the assumption is that each unit is
    assigned independently with the same ``shares`` (the order of the units does not matter)."""
    from scipy.special import gammaln, logsumexp  # lazily: 0.2 s to import

    x = np.asarray(counts, dtype=np.float64)
    theta = np.asarray(shares, dtype=np.float64)
    if theta.ndim != 1 or x.shape[-1:] != theta.shape or not (theta > 0).all():
        raise ValueError(f"shares: must be positive, one per category of counts {x.shape}, got {theta}")
    if (x < 0).any():
        raise ValueError("counts: must be >= 0")
    total = x.sum(axis=-1)
    at_null = (x * np.log(theta / theta.sum())).sum(axis=-1)
    logs = []
    for c in concentrations:
        a = c * theta / theta.sum()
        mixture = gammaln(a + x).sum(axis=-1) - gammaln(c + total) - (gammaln(a).sum() - gammaln(c))
        logs.append(mixture - at_null)
    return np.asarray(logsumexp(np.stack(logs), axis=0) - math.log(len(concentrations)), dtype=np.float64)


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha: must be between 0 and 1 (exclusive), got {alpha}")
