"""Experiment statistics: each variant's primary metric, treatment vs control, sample ratio mismatch and the verdict
(the sample size still needed lives in ``core.sequential``, beside the boundary it depends on).

Outcomes are one value per unit (a labelled prediction): binary, kind "proportion" (correct, converted: 0/1), or
continuous, kind "mean". A variant's own interval is Wilson (proportion) or a percentile bootstrap (mean); it is
descriptive. Decisions rest on the difference treatment - control, whose interval is, by default, the anytime-valid
confidence sequence of ``core.sequential`` (valid however often it is looked at), or with ``fixed_horizon=True`` the
classic normal interval, valid at one sample size fixed in advance.

Pure numpy; scipy is imported inside the one function that needs it, so commands that only read reports start fast.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from numpy.typing import ArrayLike

from shipml.core.jsonable import jsonable
from shipml.core.performance import wilson_interval
from shipml.core.sequential import Kind, fixed_halfwidth, mixture_rho, sequential_halfwidth

Verdict = Literal["ship", "rollback", "continue", "unhealthy", "no_data"]
GuardrailStatus = Literal["holds", "violated", "undecided"]
Floats = npt.NDArray[np.float64]

SRM_THRESHOLD = 0.001  # chi-square p-value under which the split is a sample ratio mismatch
_CHUNK_CELLS = 1 << 21  # bootstrap index matrices are built in chunks of at most this many cells
# Above this many units a mean's interval is the normal one: the bootstrap of a mean equals it there to a tiny
# fraction of its width, and 1,000 resamples of a million rows would take seconds.
_BOOTSTRAP_MAX_UNITS = 200_000
_NAN = float("nan")


@dataclass(frozen=True)
class VariantStats:
    """One variant's primary metric over its ``n`` units. ``variance`` is per unit (p(1-p) for a proportion, the
    sample variance for a mean), what comparisons need; NaN where undefined (no units, or one for a mean)."""

    name: str
    n: int
    mean: float
    lower: float
    upper: float
    kind: Kind
    variance: float = _NAN
    confidence: float = 0.95
    method: str = ""  # wilson, bootstrap or normal

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
    """Chi-square goodness of fit of the units each variant received against the configured weights. A mismatch
    (p < threshold) means assignment or logging is broken, so no metric of the experiment can be trusted."""

    variants: tuple[str, ...]
    observed: tuple[int, ...]
    expected_share: tuple[float, ...]
    statistic: float
    p_value: float
    threshold: float
    mismatch: bool

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
        return VariantStats(name, n, p, lower, upper, kind, p * (1.0 - p), confidence, "wilson")
    mean = float(values.mean())
    variance = float(values.var(ddof=1)) if n > 1 else _NAN
    if n > _BOOTSTRAP_MAX_UNITS:
        half = float(fixed_halfwidth(math.sqrt(variance / n), 1.0 - confidence))
        return VariantStats(name, n, mean, mean - half, mean + half, kind, variance, confidence, "normal")
    lower, upper = _bootstrap_mean(values, confidence, resamples, seed)
    return VariantStats(name, n, mean, lower, upper, kind, variance, confidence, "bootstrap")


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


def sample_ratio_mismatch(
    observed: Mapping[str, int], weights: Mapping[str, float], threshold: float = SRM_THRESHOLD
) -> SampleRatio:
    """Chi-square test of the units per variant against the configured weights (normalised to shares). Count units
    (distinct routing keys), not requests, when routing is sticky. A variant of weight 0 that received units is a
    mismatch outright; with no units at all there is nothing to test (p = 1)."""
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
        from scipy.special import chdtrc  # lazily: 0.2 s to import

        expected = counts.sum() * shares[live]
        statistic = float(np.sum((counts[live] - expected) ** 2 / expected))
        p_value = float(chdtrc(int(live.sum()) - 1, statistic))
    return SampleRatio(
        names, tuple(int(c) for c in counts), tuple(float(s) for s in shares), statistic, p_value, threshold,
        p_value < threshold,
    )  # fmt: skip


def decide(
    primary: Comparison, guardrails: Sequence[Guardrail] = (), srm: SampleRatio | None = None, *, min_count: int = 100
) -> Decision:
    """The experiment's verdict, in this order of precedence:

    unhealthy: a sample ratio mismatch (nothing else can be trusted, so never ship); no_data: a variant has no units;
    rollback: a guardrail is violated, or the primary metric is significantly worse (once both variants have
    ``min_count`` units); continue: under ``min_count`` units, or not yet decided; ship: the primary metric is
    significantly better and every guardrail holds (non-inferior within its margin).
    """
    if srm is not None and srm.mismatch:
        shown = ", ".join(
            f"{v} {c} ({s:.1%} expected)"
            for v, c, s in zip(srm.variants, srm.observed, srm.expected_share, strict=True)
        )
        return Decision("unhealthy", (
            f"sample ratio mismatch (chi-square p = {srm.p_value:.2g} < {srm.threshold:g}): {shown}; "
            "fix assignment or logging before reading any metric",
        ))  # fmt: skip
    empty = [v.name for v in (primary.control, primary.treatment) if v.n == 0]
    if empty:
        return Decision("no_data", tuple(f"variant {name} has no observations of {primary.metric}" for name in empty))
    enough = min(primary.control.n, primary.treatment.n) >= min_count
    statuses = [(g, g.status) for g in guardrails]
    rollback = [f"guardrail {_describe_guardrail(g)} is worse than its margin" for g, s in statuses if s == "violated"]
    if enough and primary.worse:
        rollback.insert(0, f"{_describe(primary)} is significantly worse")
    if rollback:
        return Decision("rollback", tuple(rollback))
    if not enough:
        low = min(primary.control, primary.treatment, key=lambda v: v.n)
        return Decision("continue", (f"variant {low.name} has {low.n} observations, under the minimum {min_count}",))
    undecided = [
        f"guardrail {_describe_guardrail(g)} is not yet within its margin" for g, s in statuses if s != "holds"
    ]
    if primary.better and not undecided:
        return Decision("ship", (f"{_describe(primary)} is significantly better and every guardrail holds",))
    reasons = [] if primary.better else [f"{_describe(primary)} is not yet significant"]
    return Decision("continue", tuple(reasons + undecided))


def _interval(estimate: float, std_error: float, n: int, alpha: float, rho: float | None) -> Interval:
    if rho is None:
        half = float(fixed_halfwidth(std_error, alpha))
    else:
        half = float(sequential_halfwidth(std_error, n, alpha, rho))
    return Interval(estimate, estimate - half, estimate + half, std_error)


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
