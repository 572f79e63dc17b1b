"""Experiment statistics: each variant's primary metric, treatment vs control, sample ratio mismatch and the verdict
(the sample size still needed lives in ``core.sequential``, beside the boundary it depends on).

Outcomes are binary, kind "proportion" (correct, converted: 0/1), or continuous, kind "mean"; ``variant_stats`` takes
one per independent unit, ``unit_stats`` a ratio over routing keys of several each. A variant's own interval is Wilson (proportion) or a percentile bootstrap (mean); it is
descriptive. Decisions rest on the difference treatment - control, whose interval is, by default, the anytime-valid
confidence sequence of ``core.sequential`` (valid however often it is looked at), or with ``fixed_horizon=True`` the
classic normal interval, valid at one sample size fixed in advance.

``latency_guardrail`` judges the tail of the latency: the share of the treatment's requests slower than the control's
p99, with an exact (beta-binomial) confidence sequence that stays valid although that p99 is estimated from the
same data (its docstring says why).

``rate_guardrail`` judges the error rate with an exact confidence sequence of each variant's rate
(``core.binomial_sequences``, the beta-binomial mixtures both guardrails share). The primary metric's unit is the
routing key (``core.units``: ``unit_stats`` takes its per-key sums).

Pure numpy; scipy is imported inside the one function that needs it, so commands that only read reports start fast.

One concept, the statistics of an A/B comparison (the structure review let it stay whole): the variant's interval,
the difference, the guardrails and the decision rest on one another's values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from numpy.typing import ArrayLike

from shipml.core.binomial_sequences import beta_prior, centred_rate_bounds, count_band, rate_bounds
from shipml.core.jsonable import jsonable
from shipml.core.performance import wilson_interval
from shipml.core.sequential import (
    Kind,
    fixed_halfwidth,
    mixture_rho,
    multinomial_log_evidence,
    sequential_halfwidth_at,
    z_quantile,
)
from shipml.core.units import UnitSums

Verdict = Literal["ship", "rollback", "continue", "unhealthy", "no_data"]
GuardrailStatus = Literal["holds", "violated", "undecided"]
Floats = npt.NDArray[np.float64]

# The guardrails `ab report` judges (pipelines/experiments.py) and a canary's step may require (core/canary.py).
ERROR_RATE = "error_rate"
LATENCY_P99 = "latency_p99"
DRIFT = "drift"
PERFORMANCE = "performance"
GUARDRAILS = (ERROR_RATE, LATENCY_P99, DRIFT, PERFORMANCE)

SRM_THRESHOLD = 0.001  # anytime-valid p-value under which the split is a sample ratio mismatch
SRM_TEST = "sequential"  # SampleRatio.test of the Dirichlet-multinomial mixture
# The rarer outcome of a 0/1 metric each variant must expect (at the pooled rate) before it decides anything.
MIN_EVENTS = 10
LATENCY_QUANTILE = 0.99  # the latency guardrail judges the treatment's requests slower than the control's p99
_CHUNK_CELLS = 1 << 21  # bootstrap index matrices are built in chunks of at most this many cells
# Above this many units a mean's interval is the normal one: the bootstrap of a mean equals it there to a tiny
# fraction of its width, and 1,000 resamples of a million rows would take seconds.
_BOOTSTRAP_MAX_UNITS = 200_000
_NAN = float("nan")


@dataclass(frozen=True)
class VariantStats:
    """One variant's primary metric over its ``n`` units (routing keys, see ``core.units``). ``variance`` is per
    unit (p(1-p) for a proportion of independent units, the sample variance for a mean, the delta method's for a
    ratio over keys), what comparisons need; NaN where undefined (no units, or one for a mean)."""

    name: str
    n: int
    mean: float
    lower: float
    upper: float
    kind: Kind
    variance: float = _NAN
    confidence: float = 0.95
    method: str = ""  # wilson, bootstrap, normal or delta (per-unit ratio, see core.units)
    observations: int | None = None  # what the units hold (labelled predictions); None: one each

    @property
    def rows(self) -> int:
        """The observations behind the metric (``n`` when each unit is one)."""
        return self.n if self.observations is None else self.observations

    def to_dict(self) -> dict[str, Any]:
        return _json(self)


@dataclass(frozen=True)
class Interval:
    """An estimate with its interval and standard error (NaN where undefined)."""

    estimate: float
    lower: float
    upper: float
    std_error: float


@dataclass(frozen=True)
class Comparison:
    """Treatment vs control on one metric: the difference (treatment - control) and the relative lift
    (treatment / control - 1), each with a (1 - alpha) interval; ``sequential``: anytime-valid (tuned by ``rho``
    for ``expected_n`` total units) or fixed-horizon."""

    metric: str
    control: VariantStats
    treatment: VariantStats
    difference: Interval
    relative_lift: Interval
    alpha: float
    sequential: bool
    expected_n: int | None
    rho: float | None
    higher_is_better: bool = True

    @property
    def better(self) -> bool:
        """The whole interval of the difference lies on the good side of 0."""
        d = self.difference
        return d.lower > 0.0 if self.higher_is_better else d.upper < 0.0

    @property
    def worse(self) -> bool:
        d = self.difference
        return d.upper < 0.0 if self.higher_is_better else d.lower > 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**_json(self), "better": self.better, "worse": self.worse}


@dataclass(frozen=True)
class Guardrail:
    """A metric the treatment must not make worse than control by more than ``margin`` (>= 0, in the metric's
    units), judged on the interval [lower, upper] of treatment - control."""

    name: str
    lower: float
    upper: float
    margin: float = 0.0
    higher_is_better: bool = False  # most guardrails are costs: error rate, latency

    def __post_init__(self) -> None:
        if not self.margin >= 0.0:
            raise ValueError(f"guardrail {self.name!r}: margin must be >= 0, got {self.margin}")

    @property
    def status(self) -> GuardrailStatus:
        """holds: the whole interval is within the margin (non-inferior); violated: the whole interval is worse than
        the margin; undecided otherwise (or without an interval)."""
        if self.higher_is_better:
            holds, violated = self.lower >= -self.margin, self.upper < -self.margin
        else:
            holds, violated = self.upper <= self.margin, self.lower > self.margin
        return "holds" if holds else "violated" if violated else "undecided"

    @classmethod
    def from_comparison(cls, comparison: Comparison, margin: float, name: str | None = None) -> Guardrail:
        d = comparison.difference
        return cls(name or comparison.metric, d.lower, d.upper, margin, comparison.higher_is_better)

    @classmethod
    def from_check(cls, name: str, failed: bool | None) -> Guardrail:
        """A yes/no verdict from monitoring (drift, a performance drop) as a guardrail: failed is violated, passed
        holds, None (not judged) is undecided."""
        lower, upper = {True: (1.0, 1.0), False: (0.0, 0.0), None: (-1.0, 1.0)}[failed]
        return cls(name, lower, upper, 0.0, higher_is_better=False)

    def to_dict(self) -> dict[str, Any]:
        return {**_json(self), "status": self.status}


@dataclass(frozen=True)
class SampleRatio:
    """The units each variant received against the configured weights. A mismatch (p < threshold) means assignment
    or logging is broken, so no metric of the experiment can be trusted. ``test``: how ``statistic`` and
    ``p_value`` were computed, "sequential" (``statistic`` is the log of the anytime-valid evidence, see
    ``sample_ratio_mismatch``), or "chi-square" (the fixed-horizon test of reports stored before it)."""

    variants: tuple[str, ...]
    observed: tuple[int, ...]
    expected_share: tuple[float, ...]
    statistic: float
    p_value: float
    threshold: float
    mismatch: bool
    test: str = "chi-square"

    def to_dict(self) -> dict[str, Any]:
        return _json(self)


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reasons: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return _json(self)


def variant_stats(
    name: str, outcomes: ArrayLike, kind: Kind, *, confidence: float = 0.95, resamples: int = 1000, seed: int = 0
) -> VariantStats:
    """One variant's metric from its per-unit outcomes (0/1 for a proportion, finite values for a mean)."""
    values = np.asarray(outcomes, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"variant {name!r}: outcomes must be 1-D, got shape {values.shape}")
    if not np.isfinite(values).all():
        raise ValueError(f"variant {name!r}: {int((~np.isfinite(values)).sum())} outcomes are NaN or infinite")
    if kind not in ("proportion", "mean"):
        raise ValueError(f"variant {name!r}: kind must be 'proportion' or 'mean', got {kind!r}")
    n = len(values)
    if n == 0:
        return VariantStats(name, 0, _NAN, _NAN, _NAN, kind, _NAN, confidence)
    if kind == "proportion":
        if not np.isin(values, (0.0, 1.0)).all():
            raise ValueError(f"variant {name!r}: a proportion's outcomes must be 0 or 1, got {np.unique(values)[:5]}")
        k = int(values.sum())
        lower, upper = wilson_interval(k, n, confidence)
        p = k / n
        # no success or no failure yet: p(1 - p) = 0 would drop this arm from a difference's standard error
        v = p * (1.0 - p) if 0 < k < n else (k + 1.0) / (n + 2.0) * (n - k + 1.0) / (n + 2.0)
        return VariantStats(name, n, p, lower, upper, kind, v, confidence, "wilson")
    mean = float(values.mean())
    variance = float(values.var(ddof=1)) if n > 1 else _NAN
    if n > _BOOTSTRAP_MAX_UNITS:
        half = float(fixed_halfwidth(math.sqrt(variance / n), 1.0 - confidence))
        return VariantStats(name, n, mean, mean - half, mean + half, kind, variance, confidence, "normal")
    lower, upper = _bootstrap_mean(values, confidence, resamples, seed)
    return VariantStats(name, n, mean, lower, upper, kind, variance, confidence, "bootstrap")


def unit_stats(name: str, sums: UnitSums, kind: Kind, *, confidence: float = 0.95) -> VariantStats:
    """One variant's ratio metric over its units (routing keys, ``core.units``): the mean sum(S) / sum(N), the
    delta method's per-unit variance, and a normal interval (clipped to [0, 1] for a proportion) on ``units``
    units; ``observations`` are the predictions behind them."""
    if kind not in ("proportion", "mean"):
        raise ValueError(f"variant {name!r}: kind must be 'proportion' or 'mean', got {kind!r}")
    rows = round(sums.observations)
    if sums.units == 0:
        return VariantStats(name, 0, _NAN, _NAN, _NAN, kind, _NAN, confidence, "delta", 0)
    mean, variance = sums.mean, sums.unit_variance(kind)
    half = float(fixed_halfwidth(math.sqrt(variance / sums.units), 1.0 - confidence)) if variance == variance else _NAN
    lower, upper = mean - half, mean + half
    if kind == "proportion":
        lower, upper = max(0.0, lower), min(1.0, upper)
    return VariantStats(name, sums.units, mean, lower, upper, kind, variance, confidence, "delta", rows)


def compare(
    control: VariantStats,
    treatment: VariantStats,
    *,
    metric: str = "primary",
    alpha: float = 0.05,
    fixed_horizon: bool = False,
    expected_n: int = 10_000,
    higher_is_better: bool = True,
) -> Comparison:
    """Difference and relative lift of treatment vs control, with delta-method standard errors:

    Var(m_t - m_c) = v_t / n_t + v_c / n_c;
    Var(m_t / m_c - 1) = v_t / (n_t m_c^2) + m_t^2 v_c / (n_c m_c^4)  (first-order Taylor expansion of the ratio
    of two independent means), undefined when m_c = 0.

    Intervals: the anytime-valid confidence sequence tuned for ``expected_n`` total units (see ``core.sequential``;
    pass the planned total, e.g. ``sample_size(...).required_total``: any value keeps the guarantee, a good one
    narrows the interval where the decision is expected), or with ``fixed_horizon`` the normal interval
    estimate +- z_(1 - alpha/2) se.
    """
    if control.kind != treatment.kind:
        raise ValueError(f"cannot compare a {treatment.kind} ({treatment.name}) with a {control.kind} ({control.name})")
    rho = None if fixed_horizon else mixture_rho(expected_n, alpha)
    nc, nt, mc, mt = control.n, treatment.n, control.mean, treatment.mean
    if nc == 0 or nt == 0:
        empty = Interval(_NAN, _NAN, _NAN, _NAN)
        difference, lift = empty, empty
    else:
        vc, vt = control.variance, treatment.variance
        difference = _interval(mt - mc, math.sqrt(vt / nt + vc / nc), nc + nt, alpha, rho)
        if mc == 0.0:
            lift = Interval(_NAN, _NAN, _NAN, _NAN)
        else:
            lift_se = math.sqrt(vt / (nt * mc * mc) + mt * mt * vc / (nc * mc**4))
            lift = _interval(mt / mc - 1.0, lift_se, nc + nt, alpha, rho)
    return Comparison(
        metric, control, treatment, difference, lift, alpha, not fixed_horizon,
        None if fixed_horizon else expected_n, rho, higher_is_better,
    )  # fmt: skip


def latency_guardrail(
    control_ms: ArrayLike,
    treatment_ms: ArrayLike,
    margin: float,
    *,
    alpha: float = 0.05,
    expected_n: int = 10_000,
    quantile: float = LATENCY_QUANTILE,
    name: str = "latency_p99",
) -> Guardrail:
    """The latency guardrail: d = P(treatment request slower than q) - (1 - quantile), where q is the control's
    true p99 (``quantile``) and 1 - quantile = 1 % is the control's own share over it. Non-inferior (holds) when
    d <= ``margin`` (0.01: at most 2 % of the treatment's requests over the control's p99, i.e. its p98 no slower
    than the control's p99). One value per answered request, in any unit.

    q is unknown, and a plug-in test (both shares over the control's estimated p99, compared as two proportions)
    gets its variance wrong: the control's share over its own p99 is 1 % by construction, and the estimate's error
    moves into the treatment's share scaled by f_treatment(q) / f_control(q), the ratio of the densities at q. That
    ratio is 1 when both latencies are equal (so an A/A test is fine) but not at the margin, where the test matters
    (about 1.7 for an exponential tail: the control's term of the variance is then about 3 times the binomial one).
    Instead, an exact binomial view in two parts, each an anytime-valid confidence sequence at alpha / 2 (Ville's
    inequality on the beta-binomial mixture martingale, Howard, Ramdas, McAuliffe & Sekhon 2021; the quantile
    sequence of Howard & Ramdas 2022, "Sequential estimation of quantiles with applications to A/B-testing and
    best-arm identification", Bernoulli 28(3)):

    1. the control's requests over q are Binomial(n_c, 1 %) whatever the distribution, so the counts the
       mixture does not reject, [k_lo, k_hi], bound q between two order statistics of the control at every n:
       L = the (k_hi + 1)-th largest <= q <= U = the k_lo-th largest;
    2. the treatment's requests over q are Binomial(n_t, P), P = d + 1 %: their count is between its count over
       U and its count over L (fewer requests exceed a higher threshold), so P lies between the sequence's lower
       bound at the first count and its upper bound at the second.

    Both parts hold at every look at once with probability >= 1 - alpha, so the interval [lower, upper] of d is a
    confidence sequence however often it is read: no density, no normal approximation, and equal latencies (ties
    at q) only make it conservative. The price: it is wider than a plug-in interval; with a few hundred requests
    a variant it is undecided unless the treatment is far slower (or the latencies tie). Each beta prior has the
    mean 1 % and the spread of the normal mixture tuned for ``expected_n`` (see ``core.sequential``): any value
    keeps the guarantee. The unit is the request, and requests must be independent: a batch's rows share its one
    latency, so pass one value per request (``Predictions.read_latencies`` does), never one per row."""
    control = _latencies(control_ms, "control")
    treatment = _latencies(treatment_ms, "treatment")
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile: must be between 0 and 1 (exclusive), got {quantile}")
    if len(control) == 0 or len(treatment) == 0:
        return Guardrail(name, _NAN, _NAN, margin)
    share, half = 1.0 - quantile, alpha / 2.0
    prior = beta_prior(share, expected_n, half)
    control.sort()
    n = len(control)
    k_lo, k_hi = count_band(n, share, prior, half)
    low = control[n - k_hi - 1] if k_hi < n else -math.inf
    high = control[n - k_lo] if k_lo > 0 else math.inf
    lower, _ = rate_bounds(int((treatment > high).sum()), len(treatment), prior, half)
    _, upper = rate_bounds(int((treatment > low).sum()), len(treatment), prior, half)
    return Guardrail(name, lower - share, upper - share, margin)


def rate_guardrail(
    control: tuple[int, int],
    treatment: tuple[int, int],
    margin: float,
    *,
    alpha: float = 0.05,
    name: str = ERROR_RATE,
) -> Guardrail:
    """A rate the treatment must not raise by more than ``margin`` (the error rate): ``control`` and ``treatment``
    are (events, trials) each. The difference's interval is [L_t - U_c, U_t - L_c] from an exact confidence sequence
    of each arm's rate at alpha / 2 (the union bound: both hold at every look at once with probability >= 1 -
    alpha), each the beta-binomial mixture of ``latency_guardrail`` centred on the rate it tests (a prior worth
    ``core.binomial_sequences.RATE_PRIOR_TRIALS`` trials). Exact at any
    count, so a small arm with no error yet proves nothing until its trials alone bound its rate (no normal
    approximation resting on a handful of events: review S6). The unit is the trial (a request), assumed
    independent of the others; the price is a wider interval than the plug-in one."""
    (kc, nc), (kt, nt) = control, treatment
    for what, (k, n) in (("control", control), ("treatment", treatment)):
        if not 0 <= k <= n:
            raise ValueError(f"{name} of the {what}: events must be between 0 and the trials, got {k} of {n}")
    if nc == 0 or nt == 0:
        return Guardrail(name, _NAN, _NAN, margin)
    half = alpha / 2.0
    lc, uc = centred_rate_bounds(kc, nc, half)
    lt, ut = centred_rate_bounds(kt, nt, half)
    return Guardrail(name, lt - uc, ut - lc, margin)


def sample_ratio_mismatch(
    observed: Mapping[str, int], weights: Mapping[str, float], threshold: float = SRM_THRESHOLD
) -> SampleRatio:
    """Sequential test of the units per variant against the configured weights (normalised to shares): the
    Dirichlet-multinomial mixture of Lindon & Malek 2022 (``core.sequential.multinomial_log_evidence``), whose
    p-value is valid however often it is looked at, so ``ab report`` may re-run it on the growing experiment every
    hour (and a canary within each step) and a correct split is flagged with probability <= ``threshold`` over all
    the looks together. Count units (distinct routing keys, each request without a key as one), not requests, when
    routing is sticky: the test assumes each unit was assigned independently with the weights. A variant of weight
    0 that received units is a mismatch outright; with no units at all there is nothing to test (p = 1)."""
    if set(observed) != set(weights):
        raise ValueError(f"variants with counts {sorted(observed)} differ from variants with weights {sorted(weights)}")
    names = tuple(weights)
    counts = np.array([observed[v] for v in names], dtype=np.float64)
    w = np.array([weights[v] for v in names], dtype=np.float64)
    if (w < 0).any() or not w.sum() > 0 or (counts < 0).any():
        raise ValueError(
            f"weights must be >= 0 with a positive sum and counts >= 0, got {dict(weights)}, {dict(observed)}"
        )
    shares = w / w.sum()
    live = shares > 0
    if counts[~live].sum() > 0:
        statistic, p_value = math.inf, 0.0
    elif counts.sum() == 0 or live.sum() < 2:
        statistic, p_value = 0.0, 1.0
    else:
        statistic = float(multinomial_log_evidence(counts[live], shares[live]))
        p_value = min(1.0, math.exp(-statistic)) if statistic > 0 else 1.0
    return SampleRatio(
        names, tuple(int(c) for c in counts), tuple(float(s) for s in shares), statistic, p_value, threshold,
        p_value < threshold, SRM_TEST,
    )  # fmt: skip


def too_few(primary: Comparison, min_count: int = 100, min_events: int = MIN_EVENTS) -> str | None:
    """Why the primary metric may not decide yet (None when it may): a variant under ``min_count`` units, or, for
    a 0/1 metric, a variant expected to hold fewer than ``min_events`` of the rarer outcome at the pooled rate
    (its observations times min(p, 1 - p)). The confidence sequence rests on the central limit theorem, which a
    handful of events does not reach: at accuracy 0.995 and a 1 % share, the small arm's few failures decide
    everything (review S3). The pooled rate, not each arm's own, so a variant that is always wrong is still
    judged."""
    low = min(primary.control, primary.treatment, key=lambda v: v.n)
    if low.n < min_count:
        return f"variant {low.name} has {low.n} units, under the minimum {min_count}"
    if primary.control.kind != "proportion" or min_events <= 0:
        return None
    arms = (primary.control, primary.treatment)
    pooled = sum(v.mean * v.rows for v in arms) / sum(v.rows for v in arms)
    rare, which = min((pooled, "successes"), (1.0 - pooled, "failures"))
    expected = {v.name: v.rows * rare for v in arms}
    name = min(expected, key=expected.__getitem__)
    if expected[name] < min_events:
        return (
            f"variant {name} expects {expected[name]:.1f} {which} at the pooled rate {pooled:.4g}, under the "
            f"minimum {min_events} before {primary.metric} can decide"
        )
    return None


def decide(
    primary: Comparison,
    guardrails: Sequence[Guardrail] = (),
    srm: SampleRatio | None = None,
    *,
    min_count: int = 100,
    min_events: int = MIN_EVENTS,
) -> Decision:
    """The experiment's verdict, in this order of precedence:

    unhealthy: a sample ratio mismatch (nothing else can be trusted, so never ship); no_data: a variant has no units;
    rollback: a guardrail is violated, or the primary metric is significantly worse (once ``too_few`` lets it
    decide: ``min_count`` units a variant, ``min_events`` of a 0/1 metric's rarer outcome); continue: too few yet,
    or not yet decided; ship: the primary metric is significantly better and every guardrail holds (non-inferior
    within its margin).
    """
    if srm is not None and srm.mismatch:
        shown = ", ".join(
            f"{v} {c} ({s:.1%} expected)"
            for v, c, s in zip(srm.variants, srm.observed, srm.expected_share, strict=True)
        )
        return Decision("unhealthy", (
            f"sample ratio mismatch ({srm.test} p = {srm.p_value:.2g} < {srm.threshold:g}): {shown}; "
            "fix assignment or logging before reading any metric",
        ))  # fmt: skip
    empty = [v.name for v in (primary.control, primary.treatment) if v.n == 0]
    if empty:
        return Decision("no_data", tuple(f"variant {name} has no observations of {primary.metric}" for name in empty))
    waiting = too_few(primary, min_count, min_events)
    statuses = [(g, g.status) for g in guardrails]
    rollback = [f"guardrail {_describe_guardrail(g)} is worse than its margin" for g, s in statuses if s == "violated"]
    if waiting is None and primary.worse:
        rollback.insert(0, f"{_describe(primary)} is significantly worse")
    if rollback:
        return Decision("rollback", tuple(rollback))
    if waiting is not None:
        return Decision("continue", (waiting,))
    undecided = [
        f"guardrail {_describe_guardrail(g)} is not yet within its margin" for g, s in statuses if s != "holds"
    ]
    if primary.better and not undecided:
        return Decision("ship", (f"{_describe(primary)} is significantly better and every guardrail holds",))
    reasons = [] if primary.better else [f"{_describe(primary)} is not yet significant"]
    return Decision("continue", tuple(reasons + undecided))


def _interval(estimate: float, std_error: float, n: int, alpha: float, rho: float | None) -> Interval:
    if rho is None:
        half = z_quantile(1.0 - alpha / 2.0) * std_error  # fixed_halfwidth, of one estimate
    else:
        half = sequential_halfwidth_at(std_error, n, alpha, rho)
    return Interval(estimate, estimate - half, estimate + half, std_error)


def _latencies(values: ArrayLike, what: str) -> Floats:
    array = np.array(values, dtype=np.float64).ravel()
    bad = int((~np.isfinite(array)).sum())
    if bad:
        raise ValueError(f"latencies of the {what}: {bad} are NaN or infinite")
    return array


def _bootstrap_mean(values: Floats, confidence: float, resamples: int, seed: int) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (``resamples`` resamples of the units, with replacement)."""
    n = len(values)
    rng = np.random.default_rng(seed)
    step = max(1, _CHUNK_CELLS // n)
    means = [
        values[rng.integers(0, n, size=(min(step, resamples - start), n))].mean(axis=1)
        for start in range(0, resamples, step)
    ]
    tail = (1.0 - confidence) / 2.0
    lower, upper = np.quantile(np.concatenate(means), [tail, 1.0 - tail])
    return float(lower), float(upper)


def _describe(c: Comparison) -> str:
    d = c.difference
    how = "anytime-valid" if c.sequential else "fixed-horizon"
    return (
        f"{c.metric} {c.treatment.name} - {c.control.name} = {d.estimate:+.4g} "
        f"[{d.lower:+.4g}, {d.upper:+.4g}] ({how} {1.0 - c.alpha:.0%})"
    )


def _describe_guardrail(g: Guardrail) -> str:
    return f"{g.name} [{g.lower:+.4g}, {g.upper:+.4g}] (margin {g.margin:g})"


def _json(instance: Any) -> dict[str, Any]:
    out: dict[str, Any] = jsonable(asdict(instance))
    return out
