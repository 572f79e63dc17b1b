"""Drift statistics on the reference profile's bins: counts in, verdicts out.

Everything works on COUNTS per bucket of a feature's ``Binning`` (``core.binning``), so that
a verdict over any window is a sum of small per-minute arrays.

A verdict per feature, in two steps (the shape of Evidently's size-dependent defaults, made one rule):

1. Is the window a different distribution at all? A chi-square test of homogeneity of two samples: the window's
   counts against the reference's (its shares as training counted them x the training rows, ``Binning.rows``), so
   the reference's own noise counts as much as the window's. Buckets are merged (a numeric feature's bins with
   their neighbours, a categorical's categories rarest first by their pooled share, the table's margins) until
   each group expects at least ``MIN_EXPECTED`` (5) rows in the smaller sample (Cochran's rule), so the
   chi-square approximation holds for 100 categories in 200 rows; a categorical's unseen bucket is compared
   together with the categories rare in both samples.
   Assumptions: each row is an independent draw (of the training population for the reference, of the serving
   population for the window). Rows of one customer repeated in a window are not independent draws: scored 5
   times each, clean windows of 200 rows drift 50-82 % of the time; ``DriftThresholds.rows_per_unit`` (how many
   rows a unit has in a window) divides the window's counts for the test, which restores the level. Every statistic of the feature carries this ``p_value``, and none of them warns or drifts
   unless it is under ``DriftThresholds.chi2_alpha`` (0.005: Pearson's approximation rejects clean windows
   1-1.5 % of the time at a nominal 1 %, so half of it keeps false drift under 1 %).
2. Is the difference large enough to matter? An effect size against a floor (the statistics marked ``decisive``):

- ``wasserstein`` (numeric): how far the values moved, in reference standard deviations: the first Wasserstein
  distance between the two distributions of present values, each bin's mass placed at its reference mean
  (``Binning.centres``). A mean shift of d sd measures about 0.9 d (the bins' means span the central 90 % of the
  mass). Defaults 0.05 warn / 0.1 drift, Evidently's threshold for its normed Wasserstein distance. Omitted for a
  reference without spread (a constant), where PSI on the buckets decides.
- ``tvd`` (categorical): total variation distance on the raw shares, the share of rows that sit in another bucket
  than the reference says. 0.05 warn / 0.1 drift: a main category moving 10 points is exactly on the drift floor.
  Rather than Cramér's V, which explodes on a bucket whose expected count is near zero, TVD counts rows.
- ``psi`` (every kind): population stability index, sum (q - p) ln(q / p) on smoothed shares, graded on the
  industry's 0.1 warn / 0.2 drift. It catches relative changes of rare buckets (nulls appearing: 30 % of rows
  where training had none is a PSI of 2.4).

The feature's verdict is the most severe of its decisive statistics: "drift" when the test rejects and an effect
passes its drift floor; "warn" when the test rejects and the largest effect is between its warn and drift floors
(a real change, smaller than one that matters); "no_drift" otherwise, however large a small window's noise makes
the effects. The price of the test is power at small windows: a +0.2 sd shift needs about 1,000 rows to be
significant, and nothing is judged under ``DriftThresholds.min_rows`` (200; the verdict is "not_enough_data").
The floors keep a million rows from flagging a significant but negligible difference; the test keeps a small
window's noise, or a reference with few rows per bucket, from flagging at all. With few training rows per bucket
the effect sizes carry the reference's noise too (about (k-1)/N_ref for PSI): the test still holds the
false-alarm rate there, but a small real change may then be graded higher than its size.

- ``js``: Jensen-Shannon distance, base 2, in [0, 1]. Reported with its own (gated) verdict, never deciding.
- ``domain_auc`` (``core.domain_drift``): a multivariate check for what no per-feature statistic sees, such as a
  change in the correlation between two features.

Smoothing (PSI and JS only): both distributions are normalised to shares and ``SMOOTHING`` (1e-4) is added to
every bucket of both, then they are renormalised, so an empty bucket never yields infinity or NaN: a bucket holding
a share ``s`` on one side and nothing on the other adds at most ``s * ln(s / 1e-4)`` to PSI. With no rows at all,
every statistic is 0 (and the verdict is "not_enough_data"). TVD, Wasserstein and the test use the raw counts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from shipml.core.binning import Binning, Counts, ProfileBinnings, Shares
from shipml.core.profile import ReferenceProfile
from shipml.errors import ConfigError, SchemaError

Verdict = Literal["no_drift", "warn", "drift", "not_enough_data"]
Kind = Literal["numeric", "categorical", "multivariate"]

SMOOTHING = 1e-4
MIN_EXPECTED = 5.0  # the test merges buckets until each group expects this many rows (Cochran's rule)
MULTIVARIATE = "__multivariate__"  # the feature name of the domain classifier's result
# Most severe first: a feature's (or a report's) verdict is the most severe of its parts, so a
# feature without enough data keeps a report from saying "no_drift".
_SEVERITY: tuple[Verdict, ...] = ("drift", "warn", "not_enough_data", "no_drift")
_SLACK = 1e-12  # a value computed to sit exactly on a threshold (10 points of 100 %) is on it, not 1e-17 under


@dataclass(frozen=True)
class DriftThresholds:
    """The test's level, the warn and drift floors per statistic, and the sample size a verdict needs."""

    psi_warn: float = 0.1
    psi_drift: float = 0.2
    js_warn: float = 0.13
    js_drift: float = 0.19
    chi2_alpha: float = 0.005  # the two-sample test's level: no statistic warns or drifts unless p is under it
    tvd_warn: float = 0.05
    tvd_drift: float = 0.1
    wasserstein_warn: float = 0.05  # in reference standard deviations
    wasserstein_drift: float = 0.1
    # The domain AUC is judged when its permutation p-value is under domain_alpha (with the default 20
    # permutations the smallest p is 1/21 = 0.048: the observed AUC beat every shuffled one); the AUC floor
    # keeps a large sample's detectable but harmless difference from flagging (0.5 is chance).
    domain_alpha: float = 0.05
    domain_auc_warn: float = 0.53
    domain_auc_drift: float = 0.55
    min_rows: int = 200  # fewer rows than this in a window: "not_enough_data"
    # Rows per independent unit (Kish's design effect): a customer scored m times in a window is m rows but one
    # draw; the test counts rows / this. 1: every row is a draw of its own.
    rows_per_unit: float = 1.0

    def __post_init__(self) -> None:
        problems = [
            f"{name}_warn: must be <= {name}_drift ({getattr(self, name + '_drift')}), got {getattr(self, name + '_warn')}"
            for name in ("psi", "js", "tvd", "wasserstein", "domain_auc")
            if not 0 <= getattr(self, name + "_warn") <= getattr(self, name + "_drift")
        ]
        problems += [
            f"{name}: must be between 0 and 1 (exclusive), got {getattr(self, name)}"
            for name in ("chi2_alpha", "domain_alpha")
            if not 0 < getattr(self, name) < 1
        ]
        if self.min_rows < 1:
            problems.append(f"min_rows: must be >= 1, got {self.min_rows}")
        if not self.rows_per_unit >= 1:
            problems.append(f"rows_per_unit: must be >= 1, got {self.rows_per_unit}")
        if problems:
            raise ConfigError(problems, "drift thresholds")


@dataclass(frozen=True)
class FeatureDrift:
    """One statistic of one feature over one window, with the row count it rests on.

    ``value`` grows with drift for every statistic; ``p_value`` is the test that gates its verdict (the
    two-sample chi-square test of the feature's buckets, or the permutation test for ``domain_auc``);
    ``decisive`` says whether this statistic counts towards the feature's verdict (see the module docstring).
    """

    feature: str
    kind: Kind
    statistic: str
    value: float
    threshold_warn: float
    threshold_drift: float
    rows: int
    verdict: Verdict
    p_value: float | None = None
    decisive: bool = True


@dataclass(frozen=True)
class DriftResult:
    """Every statistic of every feature (and the prediction), and the verdicts they add up to."""

    results: tuple[FeatureDrift, ...]

    @property
    def verdicts(self) -> dict[str, Verdict]:
        """Per feature: the most severe verdict of its deciding statistics."""
        by_feature: dict[str, list[Verdict]] = {}
        for r in self.results:
            by_feature.setdefault(r.feature, [])
            if r.decisive:
                by_feature[r.feature].append(r.verdict)
        return {f: worst(v) for f, v in by_feature.items()}

    @property
    def drifted(self) -> tuple[str, ...]:
        return tuple(f for f, v in self.verdicts.items() if v == "drift")

    @property
    def any_drift(self) -> bool:
        return bool(self.drifted)

    @property
    def verdict(self) -> Verdict:
        """The report's verdict: drift if any feature drifted; "not_enough_data" beats "no_drift"."""
        return worst(list(self.verdicts.values()))


def worst(verdicts: Sequence[Verdict]) -> Verdict:
    """The most severe of ``verdicts`` (drift > warn > not_enough_data > no_drift); none: not_enough_data."""
    if not verdicts:
        return "not_enough_data"
    return min(verdicts, key=_SEVERITY.index)


def smoothed(counts_or_shares: npt.ArrayLike) -> Shares:
    """Shares with ``SMOOTHING`` added to every bucket (the module's one smoothing rule)."""
    x = np.asarray(counts_or_shares, dtype=np.float64)
    total = x.sum()
    shares = x / total if total > 0 else np.zeros_like(x)
    return (shares + SMOOTHING) / (1.0 + SMOOTHING * len(x))


def _pair(reference: npt.ArrayLike, counts: npt.ArrayLike) -> tuple[Shares, Shares, float]:
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(counts, dtype=np.float64)
    if ref.shape != cur.shape or ref.ndim != 1:
        raise SchemaError(f"drift statistics need one count per reference bucket: {ref.shape} vs {cur.shape}")
    if not (np.all(np.isfinite(cur)) and np.all(cur >= 0)):
        raise SchemaError("drift statistics need finite, non-negative counts")
    return smoothed(ref), smoothed(cur), float(cur.sum())


def psi(reference: npt.ArrayLike, counts: npt.ArrayLike) -> float:
    """Population stability index of ``counts`` against the reference shares (0 when nothing was counted)."""
    p, q, n = _pair(reference, counts)
    return float(np.sum((q - p) * np.log(q / p))) if n > 0 else 0.0


def js_distance(reference: npt.ArrayLike, counts: npt.ArrayLike) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) of ``counts`` against the reference shares."""
    p, q, n = _pair(reference, counts)
    if n == 0:
        return 0.0
    m = (p + q) / 2
    divergence = 0.5 * np.sum(p * np.log2(p / m)) + 0.5 * np.sum(q * np.log2(q / m))
    return float(np.sqrt(np.clip(divergence, 0.0, 1.0)))


def total_variation(reference: npt.ArrayLike, counts: npt.ArrayLike) -> float:
    """Share of rows that sit in another bucket than the reference shares say (in [0, 1]), on the raw shares."""
    ref = np.asarray(reference, dtype=np.float64)
    n = _pair(ref, counts)[2]
    if n == 0 or ref.sum() <= 0:
        return 0.0
    return float(0.5 * np.sum(np.abs(np.asarray(counts, dtype=np.float64) / n - ref / ref.sum())))


def wasserstein(binning: Binning, counts: npt.ArrayLike) -> float | None:
    """How far the window's present values moved from the reference's, in reference standard deviations.

    The first Wasserstein distance (the area between the two distribution functions) with each bin's mass at its
    reference mean (``Binning.centres``): sum over neighbouring bins of |F_ref - F_window| x the distance between
    their centres. None for a categorical or a reference without spread; 0 when either side has no present value.
    """
    if binning.kind != "numeric" or binning.scale is None:
        return None
    present = np.asarray(counts, dtype=np.float64)[:-1]  # the last bucket holds the nulls
    reference = np.asarray(binning.reference, dtype=np.float64)[:-1]
    if present.sum() <= 0 or reference.sum() <= 0 or len(present) < 2:
        return 0.0
    gap = np.cumsum(present / present.sum())[:-1] - np.cumsum(reference / reference.sum())[:-1]
    return float(np.sum(np.abs(gap) * np.diff(binning.centres)) / binning.scale)


@dataclass(frozen=True)
class Homogeneity:
    """The two-sample chi-square test of a window against the reference: statistic, degrees of freedom, p-value."""

    statistic: float
    df: int
    p_value: float


def groups_of(shares: Shares, rows: float, ordered: bool = False) -> npt.NDArray[np.intp]:
    """The test's group of each bucket: buckets merged, rarest share first (``ordered``: neighbours, in bucket
    order), until a group expects ``MIN_EXPECTED`` rows in a sample of ``rows``; a short last group joins the one
    before. When that leaves one group, the largest bucket is tested against the rest.

    Which shares order the merging matters: it must not select on either sample's noise. A categorical's are the
    pooled shares (window and training together): the table's column totals, which the test conditions on, where
    the training shares alone would select on training's noise (a long tail's categories seen once in training
    are, as a group, rarer in training than in the population). A numeric feature's quantile bins hold equal
    training shares, so the pooled ones would sort them by the window's own counts: its neighbouring bins are
    merged instead, by the training shares."""
    order = np.arange(len(shares)) if ordered else np.argsort(shares, kind="stable")
    group = np.zeros(len(shares), dtype=np.intp)
    current, expected = 0, 0.0
    for i in order.tolist():
        group[i] = current
        expected += float(shares[i]) * rows
        if expected >= MIN_EXPECTED:
            current, expected = current + 1, 0.0
    if current > 0 and expected < MIN_EXPECTED:
        group[group == current] = current - 1  # the short last group (or an empty one) joins the one before
    if group.max(initial=0) == 0 and np.count_nonzero(shares) >= 2:
        group = (np.arange(len(shares)) == np.argmax(shares)).astype(np.intp)
    return group


def homogeneity(
    reference: npt.ArrayLike,
    counts: npt.ArrayLike,
    reference_rows: float | None,
    unseen: int | None = None,
    ordered: bool = False,
) -> Homogeneity:
    """Whether ``counts`` and a reference of ``reference_rows`` rows in the ``reference`` shares can be samples of
    one distribution: Pearson's chi-square test of homogeneity on the groups of ``groups_of``. With
    ``reference_rows`` None the reference shares are taken as exact (a goodness-of-fit test).

    ``unseen``: a categorical's unseen bucket, the window's rows of every category training missed. Those
    categories are the rare ones, so the bucket is compared together with the categories rare in both samples
    (a pooled share under ``MIN_EXPECTED`` rows in the smaller sample): as a whole, the tail the window has and
    the tail training saw. Alone, it would hold the window's 5 % of a long tail against training's 0 rows."""
    # here, not at import: a command that only reads reports starts faster (scipy.special: a fifth of scipy.stats)
    from scipy.special import chdtrc  # the chi-square distribution's upper tail

    n = _pair(reference, counts)[2]  # checks the shapes and the counts
    ref = np.asarray(reference, dtype=np.float64)
    ref = ref / ref.sum() if ref.sum() > 0 else ref
    observed = np.asarray(counts, dtype=np.float64)
    if unseen is not None and reference_rows and n > 0:
        n_ref = float(reference_rows)
        rare = (observed + ref * n_ref) / (n + n_ref) * min(n, n_ref) < MIN_EXPECTED
        rare[unseen] = True
        ref = np.append(ref[~rare], ref[rare].sum())
        observed = np.append(observed[~rare], observed[rare].sum())
    exact = reference_rows is None or reference_rows <= 0
    n_ref = 0.0 if exact else float(reference_rows or 0)
    if n == 0:
        return Homogeneity(0.0, 0, 1.0)
    if exact:
        if np.any((ref == 0) & (observed > 0)):
            return Homogeneity(float("inf"), len(ref) - 1, 0.0)  # rows where an exact reference has none
        group = groups_of(ref, n, ordered)
        window = np.bincount(group, weights=observed)
        expected = np.bincount(group, weights=ref) * n
        keep = expected > 0
        statistic = float(np.sum((window[keep] - expected[keep]) ** 2 / expected[keep]))
    else:
        by = ref if ordered else (observed + ref * n_ref) / (n + n_ref)
        group = groups_of(by, min(n, n_ref), ordered)
        window = np.bincount(group, weights=observed)
        share = np.bincount(group, weights=ref)
        pooled = (window + share * n_ref) / (n + n_ref)
        keep = pooled > 0
        statistic = float(np.sum((window[keep] / n - share[keep]) ** 2 / (pooled[keep] * (1.0 / n + 1.0 / n_ref))))
    df = int(np.count_nonzero(keep)) - 1
    if df < 1:
        return Homogeneity(statistic, 0, 1.0)
    return Homogeneity(statistic, df, float(chdtrc(df, statistic)))


def chi_square_pvalue(reference: npt.ArrayLike, counts: npt.ArrayLike, reference_rows: float | None = None) -> float:
    """The p-value of ``homogeneity`` (with ``reference_rows`` None: of the reference shares taken as exact)."""
    return homogeneity(reference, counts, reference_rows).p_value


def grade(value: float, warn: float, drift: float) -> Verdict:
    """The verdict of a statistic that grows with drift (a value on a threshold reaches it)."""
    return "drift" if value >= drift - _SLACK else "warn" if value >= warn - _SLACK else "no_drift"


def drift_of(binning: Binning, counts: npt.ArrayLike, thresholds: DriftThresholds | None = None) -> list[FeatureDrift]:
    """Every statistic of one feature's counts over a window, each gated by the feature's two-sample test: the
    kind's effect size (Wasserstein for a numeric feature, TVD for a categorical) and PSI, which decide, then JS."""
    t = thresholds or DriftThresholds()
    c = _checked_counts(binning, counts)
    rows = int(c.sum())
    enough = rows >= t.min_rows
    test = homogeneity(
        binning.training_shares, c / t.rows_per_unit, binning.rows, binning.unseen, ordered=binning.kind == "numeric"
    )
    significant = test.p_value < t.chi2_alpha

    def result(statistic: str, value: float, warn: float, drift: float, decisive: bool = True) -> FeatureDrift:
        verdict: Verdict = "not_enough_data" if not enough else grade(value, warn, drift) if significant else "no_drift"
        return FeatureDrift(
            binning.feature, binning.kind, statistic, value, warn, drift, rows, verdict, test.p_value, decisive
        )

    out = []  # the kind's effect size first: the report draws the first statistic over time
    if binning.kind == "categorical":
        out.append(result("tvd", total_variation(binning.reference, c), t.tvd_warn, t.tvd_drift))
    else:
        moved = wasserstein(binning, c)
        if moved is not None:
            out.append(result("wasserstein", moved, t.wasserstein_warn, t.wasserstein_drift))
    out.append(result("psi", psi(binning.reference, c), t.psi_warn, t.psi_drift))
    out.append(result("js", js_distance(binning.reference, c), t.js_warn, t.js_drift, decisive=False))
    return out


def _checked_counts(binning: Binning, counts: npt.ArrayLike) -> Counts:
    c = np.asarray(counts)
    if c.shape != (binning.buckets,):
        raise SchemaError(
            f"feature {binning.feature!r}: counts must have one entry per bucket of the profile "
            f"({binning.buckets}), got shape {c.shape}; were they counted on another profile version?"
        )
    if c.dtype.kind not in "iu" or np.any(c < 0):
        raise SchemaError(f"feature {binning.feature!r}: counts must be non-negative integers, got {c.dtype}")
    return c.astype(np.int64, copy=False)


def feature_drift(
    profile: ReferenceProfile | ProfileBinnings,
    counts_by_feature: Mapping[str, npt.ArrayLike],
    thresholds: DriftThresholds | None = None,
) -> DriftResult:
    """Every statistic of every profiled feature and of the prediction (counts under ``PREDICTION``).

    Pass a ``ProfileBinnings`` built once per profile version to avoid rebuilding it per call. A
    feature without counts rests on 0 rows ("not_enough_data"); counts for a feature the profile
    does not know are refused.
    """
    binnings = (profile if isinstance(profile, ProfileBinnings) else ProfileBinnings.of(profile)).all
    unknown = sorted(set(counts_by_feature) - set(binnings))
    if unknown:
        raise SchemaError(f"counts for features the reference profile does not have: {', '.join(unknown)}")
    results: list[FeatureDrift] = []
    for name, binning in binnings.items():
        counts = counts_by_feature.get(name, np.zeros(binning.buckets, dtype=np.int64))
        results += drift_of(binning, counts, thresholds)
    return DriftResult(tuple(results))
