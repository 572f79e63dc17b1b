"""Drift statistics on the reference profile's bins: counts in, verdicts out.

Everything works on COUNTS per bucket of a feature's ``Binning`` (``core.binning``), so that
a verdict over any window is a sum of small per-minute arrays.

Smoothing, the one rule used everywhere: both distributions are normalised to shares and
``SMOOTHING`` (1e-4, one row in ten thousand) is added to every bucket of both, then they are
renormalised. An empty bucket thus never yields infinity or NaN: a bucket holding a share ``s``
on one side and nothing on the other adds at most ``s * ln(s / 1e-4)`` to PSI (30 % unseen
rows: 2.4), and a bucket empty on both sides adds exactly 0. With no rows at all, every
statistic is 0 (and the verdict is "not_enough_data").

Statistics and which one decides (``FeatureDrift.decisive``):

- ``psi``: population stability index, sum (q - p) ln(q / p). Decides for every feature and
  for the prediction. Defaults 0.1 warn / 0.2 drift (the industry convention).
- ``js``: Jensen-Shannon distance, base 2, in [0, 1]. Reported with its own verdict, never
  deciding (it says the same as PSI: PSI ~ 8 ln2 JS^2 for small shifts, so the defaults
  0.13 / 0.19 are PSI's 0.1 / 0.2 on that scale).
- ``tvd`` (categorical only): total variation distance, the share of rows that sit in another
  bucket than the reference says, judged only when a chi-square goodness-of-fit test rejects
  (``p_value`` < 0.01). Decides together with PSI (the worse of the two wins). The p-value keeps
  a small sample's noise from flagging; the effect floor keeps a million rows from flagging a
  significant but negligible difference. TVD rather than Cramér's V because V explodes on a
  bucket whose expected count is near zero (two unseen rows in a thousand would "drift"),
  while TVD counts rows. A main category moving 20 points is a TVD of 0.2: drift, where PSI
  alone may only warn (about 0.17 for 0.6/0.25/0.15 -> 0.4/0.35/0.25).
- ``domain_auc`` (``core.domain_drift``): a multivariate check for what no per-feature
  statistic sees, such as a change in the correlation between two features.

Under ``DriftThresholds.min_rows`` rows the verdict is "not_enough_data", never "no_drift".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from shipml.core.binning import Binning, Counts, ProfileBinnings, Shares
from shipml.core.profile import ReferenceProfile
from shipml.errors import ConfigError, SchemaError

Verdict = Literal["no_drift", "warn", "drift", "not_enough_data"]
Kind = Literal["numeric", "categorical", "multivariate"]

SMOOTHING = 1e-4
MULTIVARIATE = "__multivariate__"  # the feature name of the domain classifier's result
# Most severe first: a feature's (or a report's) verdict is the most severe of its parts, so a
# feature without enough data keeps a report from saying "no_drift".
_SEVERITY: tuple[Verdict, ...] = ("drift", "warn", "not_enough_data", "no_drift")


@dataclass(frozen=True)
class DriftThresholds:
    """Warn and drift thresholds per statistic, and the sample size a verdict needs."""

    psi_warn: float = 0.1
    psi_drift: float = 0.2
    js_warn: float = 0.13
    js_drift: float = 0.19
    chi2_alpha: float = 0.01  # the chi-square p-value under which TVD is judged
    tvd_warn: float = 0.05
    tvd_drift: float = 0.1
    # The domain AUC is judged when its permutation p-value is under domain_alpha (with the default 20
    # permutations the smallest p is 1/21 = 0.048: the observed AUC beat every shuffled one); the AUC floor
    # keeps a large sample's detectable but harmless difference from flagging (0.5 is chance).
    domain_alpha: float = 0.05
    domain_auc_warn: float = 0.53
    domain_auc_drift: float = 0.55
    min_rows: int = 200  # fewer rows than this in a window: "not_enough_data"

    def __post_init__(self) -> None:
        problems = [
            f"{name}_warn: must be <= {name}_drift ({getattr(self, name + '_drift')}), got {getattr(self, name + '_warn')}"
            for name in ("psi", "js", "tvd", "domain_auc")
            if not 0 <= getattr(self, name + "_warn") <= getattr(self, name + "_drift")
        ]
        problems += [
            f"{name}: must be between 0 and 1 (exclusive), got {getattr(self, name)}"
            for name in ("chi2_alpha", "domain_alpha")
            if not 0 < getattr(self, name) < 1
        ]
        if self.min_rows < 1:
            problems.append(f"min_rows: must be >= 1, got {self.min_rows}")
        if problems:
            raise ConfigError(problems, "drift thresholds")


@dataclass(frozen=True)
class FeatureDrift:
    """One statistic of one feature over one window, with the row count it rests on.

    ``value`` grows with drift for every statistic; ``p_value`` is set for the tests that gate a
    verdict (chi-square for ``tvd``, the permutation test for ``domain_auc``); ``decisive`` says
    whether this statistic counts towards the feature's verdict (see the module docstring).
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
    """Share of rows that sit in another bucket than the reference shares say (in [0, 1])."""
    p, q, n = _pair(reference, counts)
    return float(0.5 * np.sum(np.abs(q - p))) if n > 0 else 0.0


def chi_square_pvalue(reference: npt.ArrayLike, counts: npt.ArrayLike) -> float:
    """Goodness-of-fit p-value of ``counts`` against the (smoothed) reference shares scaled to their total.

    Buckets empty on both sides are left out: they carry no evidence, only degrees of freedom.
    """
    from scipy import stats  # here, not at import: a command that only reads reports starts faster

    p, _, n = _pair(reference, counts)
    observed = np.asarray(counts, dtype=np.float64)
    keep = (np.asarray(reference) > 0) | (observed > 0)
    if n == 0 or np.count_nonzero(keep) < 2:
        return 1.0
    expected = p[keep] / p[keep].sum() * n
    return float(stats.chisquare(observed[keep], expected).pvalue)


def grade(value: float, warn: float, drift: float) -> Verdict:
    """The verdict of a statistic that grows with drift."""
    return "drift" if value >= drift else "warn" if value >= warn else "no_drift"


def drift_of(binning: Binning, counts: npt.ArrayLike, thresholds: DriftThresholds | None = None) -> list[FeatureDrift]:
    """PSI and JS (and, for categoricals, chi-square-gated TVD) of one feature's counts over a window."""
    t = thresholds or DriftThresholds()
    c = _checked_counts(binning, counts)
    rows = int(c.sum())
    enough = rows >= t.min_rows

    def result(
        statistic: str, value: float, warn: float, drift: float, gate: bool = True, **extra: Any
    ) -> FeatureDrift:
        verdict = "not_enough_data" if not enough else grade(value, warn, drift) if gate else "no_drift"
        return FeatureDrift(binning.feature, binning.kind, statistic, value, warn, drift, rows, verdict, **extra)

    out = [
        result("psi", psi(binning.reference, c), t.psi_warn, t.psi_drift),
        result("js", js_distance(binning.reference, c), t.js_warn, t.js_drift, decisive=False),
    ]
    if binning.kind == "categorical":
        # TVD is judged only when the chi-square test rejects: below the p-value gate it cannot warn or drift.
        p_value = chi_square_pvalue(binning.reference, c)
        tvd = total_variation(binning.reference, c)
        out.append(result("tvd", tvd, t.tvd_warn, t.tvd_drift, gate=p_value < t.chi2_alpha, p_value=p_value))
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
