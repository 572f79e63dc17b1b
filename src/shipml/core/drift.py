"""Drift statistics on the reference profile's bins: counts in, verdicts out.

Everything works on COUNTS per bucket, so that a verdict over any window is a sum of
small per-minute arrays. A feature's buckets (its ``Binning``, built once per profile):

- numeric: the profile's ``len(edges) + 1`` bins (a value equal to an edge goes to the
  upper bin, as in ``core.profile``), then a null bucket;
- categorical: one bucket per reference category, then an unseen-category bucket, then a
  null bucket. Unseen categories and nulls are therefore drift like any other shift.

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
- ``domain_auc`` (``domain_classifier_drift``): a multivariate check for what no per-feature
  statistic sees, such as a change in the correlation between two features.

Under ``DriftThresholds.min_rows`` rows the verdict is "not_enough_data", never "no_drift".
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from shipml.core.profile import CategoricalProfile, NumericProfile, ReferenceProfile
from shipml.errors import ConfigError, SchemaError

Verdict = Literal["no_drift", "warn", "drift", "not_enough_data"]
Kind = Literal["numeric", "categorical", "multivariate"]
Counts = npt.NDArray[np.int64]
Shares = npt.NDArray[np.float64]

SMOOTHING = 1e-4
PREDICTION = "__prediction__"  # the feature name under which the model's output is binned and reported
MULTIVARIATE = "__multivariate__"  # the feature name of the domain classifier's result
UNSEEN = "__unseen__"
NULL = "__null__"
# Most severe first: a feature's (or a report's) verdict is the most severe of its parts, so a
# feature without enough data keeps a report from saying "no_drift".
_SEVERITY: tuple[Verdict, ...] = ("drift", "warn", "not_enough_data", "no_drift")
# The domain classifier encodes at most this many reference categories per column (the rest share one code):
# HistGradientBoosting takes categorical codes below its 255 bins.
_MAX_DOMAIN_CATEGORIES = 250


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


# --- bins ------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Binning:
    """A feature's buckets and the reference share of each (built once per profile, read-only)."""

    feature: str
    kind: Literal["numeric", "categorical"]
    reference: Shares  # one share per bucket, summing to 1 (nulls and unseen included)
    edges: npt.NDArray[np.float64] = field(default_factory=lambda: np.empty(0))
    categories: tuple[str, ...] = ()
    _index: dict[str, int] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, feature: str, profile: NumericProfile | CategoricalProfile) -> Binning:
        """The buckets of ``feature`` from its profile: expected shares are frequency x (1 - null_rate), then nulls."""
        present = 1.0 - profile.null_rate
        if isinstance(profile, NumericProfile):
            edges = np.asarray(profile.edges, dtype=np.float64)
            freqs = np.asarray(profile.frequencies, dtype=np.float64)
            if len(freqs) != len(edges) + 1:
                raise SchemaError(
                    f"profile of feature {feature!r}: {len(edges)} bin edges need {len(edges) + 1} "
                    f"frequencies, got {len(freqs)}"
                )
            reference = np.append(freqs * present, profile.null_rate)
            return cls(feature, "numeric", _read_only(reference), edges=_read_only(edges))
        categories = tuple(profile.frequencies)
        shares = np.array([profile.frequencies[c] for c in categories], dtype=np.float64)
        reference = np.concatenate([shares * present, [0.0, profile.null_rate]])
        index = {c: i for i, c in enumerate(categories)}
        return cls(feature, "categorical", _read_only(reference), categories=categories, _index=index)

    @property
    def buckets(self) -> int:
        return len(self.reference)

    @property
    def labels(self) -> tuple[str, ...]:
        """A name per bucket, for reports: intervals, or categories, then unseen and null."""
        if self.kind == "categorical":
            return (*self.categories, UNSEEN, NULL)
        bounds = ["-inf", *(f"{e:g}" for e in self.edges), "inf"]
        return (*(f"[{lo}, {hi})" for lo, hi in pairwise(bounds)), NULL)


@dataclass(frozen=True)
class ProfileBinnings:
    """The binning of every feature of a profile and of its prediction, built once per profile version."""

    features: dict[str, Binning]
    prediction: Binning

    @classmethod
    def of(cls, profile: ReferenceProfile) -> ProfileBinnings:
        profiles: dict[str, NumericProfile | CategoricalProfile] = {**profile.numeric, **profile.categorical}
        if PREDICTION in profiles:
            raise SchemaError(f"profile: a feature may not be called {PREDICTION!r} (the name of the prediction)")
        return cls(
            features={name: Binning.of(name, p) for name, p in profiles.items()},
            prediction=Binning.of(PREDICTION, profile.prediction),
        )

    @property
    def all(self) -> dict[str, Binning]:
        """The features' binnings and the prediction's, under ``PREDICTION``."""
        return {**self.features, PREDICTION: self.prediction}


def _read_only(a: npt.NDArray[Any]) -> npt.NDArray[Any]:
    a.setflags(write=False)
    return a


def numeric_counts(binning: Binning, values: npt.ArrayLike) -> Counts:
    """Rows per bucket of ``values`` (any float, int or bool array; NaN and None are nulls)."""
    _expect_kind(binning, "numeric")
    x = np.ravel(np.asarray(values))
    if x.dtype.kind not in "biuf":
        try:
            x = x.astype(np.float64)  # an object array of numbers and None
        except (TypeError, ValueError):
            raise SchemaError(
                f"feature {binning.feature!r}: numeric drift needs numbers, got values of dtype {x.dtype}"
            ) from None
    x = x.astype(np.float64, copy=False)
    nulls = int(np.count_nonzero(np.isnan(x)))
    # searchsorted sorts NaN after every edge, into the last bin: move them to the null bucket.
    counts = np.bincount(np.searchsorted(binning.edges, x, side="right"), minlength=len(binning.edges) + 1)
    counts[-1] -= nulls
    return np.append(counts, nulls).astype(np.int64)


def categorical_counts(binning: Binning, values: npt.ArrayLike) -> Counts:
    """Rows per bucket of ``values`` (categories compared as text, as the profile keeps them; None/NaN are nulls)."""
    _expect_kind(binning, "categorical")
    codes, uniques = pd.factorize(np.ravel(np.asarray(values, dtype=object)), use_na_sentinel=True)
    per_unique = np.bincount(codes + 1, minlength=len(uniques) + 1)  # slot 0: nulls (code -1)
    unseen, null = binning.buckets - 2, binning.buckets - 1
    target = np.array([binning._index.get(str(u), unseen) for u in uniques], dtype=np.intp)
    counts = np.zeros(binning.buckets, dtype=np.int64)
    np.add.at(counts, target, per_unique[1:])
    counts[null] += per_unique[0]
    return counts


def counts_of(binning: Binning, values: npt.ArrayLike) -> Counts:
    """``numeric_counts`` or ``categorical_counts``, as the binning's kind says."""
    return numeric_counts(binning, values) if binning.kind == "numeric" else categorical_counts(binning, values)


def _expect_kind(binning: Binning, kind: str) -> None:
    if binning.kind != kind:
        raise SchemaError(f"feature {binning.feature!r} is {binning.kind} in the profile, not {kind}")


# --- statistics ------------------------------------------------------------------------------


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


# --- multivariate: the domain classifier -----------------------------------------------------


def domain_classifier_drift(
    reference: Mapping[str, npt.ArrayLike],
    current: Mapping[str, npt.ArrayLike],
    thresholds: DriftThresholds | None = None,
    *,
    categorical: Collection[str] = (),
    max_rows: int = 5_000,
    permutations: int = 20,
    folds: int = 3,
    seed: int = 0,
) -> FeatureDrift:
    """Whether a small tree model can tell ``current`` rows from ``reference`` rows better than chance.

    The profile keeps only histograms, so the caller passes a sample of reference ROWS (columns
    as arrays of equal length; the same columns on both sides). Columns of bool/int/float dtype
    are numeric, others (and those named in ``categorical``) categorical. Each side is subsampled
    to ``max_rows``; the cross-validated AUC is compared with the AUCs of ``permutations`` runs
    on shuffled domain labels: p = (1 + #null >= observed) / (permutations + 1). Drift needs
    p < ``domain_alpha`` AND an AUC of at least ``domain_auc_drift``. ``rows`` is the number of
    current rows used. Deterministic for a given ``seed``.
    """
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]  # scikit-learn's own dependency

    t = thresholds or DriftThresholds()
    names, ref, cur = _domain_columns(reference, current, categorical)
    n_ref, n_cur = len(next(iter(ref.values()))), len(next(iter(cur.values())))
    rng = np.random.default_rng(seed)
    ri = np.sort(rng.permutation(n_ref)[:max_rows])
    ci = np.sort(rng.permutation(n_cur)[:max_rows])
    if min(len(ri), len(ci)) < max(t.min_rows, folds):
        return _domain_result(0.5, 1.0, len(ci), "not_enough_data", t)
    x, cat_mask = _design(names, ref, cur, ri, ci, categorical)
    y = np.r_[np.zeros(len(ri), dtype=np.int64), np.ones(len(ci), dtype=np.int64)]
    # One thread: 21 x ``folds`` small fits are dominated by OpenMP start-up and contention on a shared machine
    # (3-5x slower with threads on 2 busy cores), and the job must not take every core from the server.
    with threadpool_limits(limits=1):
        observed = _cv_auc(x, y, cat_mask, folds, seed)
        null = np.array([_cv_auc(x, rng.permutation(y), cat_mask, folds, seed) for _ in range(permutations)])
    p_value = float((1 + np.count_nonzero(null >= observed)) / (permutations + 1))
    verdict = grade(observed, t.domain_auc_warn, t.domain_auc_drift) if p_value < t.domain_alpha else "no_drift"
    return _domain_result(observed, p_value, len(ci), verdict, t)


def _domain_result(auc: float, p_value: float, rows: int, verdict: Verdict, t: DriftThresholds) -> FeatureDrift:
    return FeatureDrift(
        MULTIVARIATE, "multivariate", "domain_auc", auc, t.domain_auc_warn, t.domain_auc_drift, rows, verdict, p_value
    )


def _domain_columns(
    reference: Mapping[str, npt.ArrayLike], current: Mapping[str, npt.ArrayLike], categorical: Collection[str]
) -> tuple[list[str], dict[str, npt.NDArray[Any]], dict[str, npt.NDArray[Any]]]:
    names = sorted(reference)
    if not names or sorted(current) != names:
        raise SchemaError(
            f"domain classifier: reference and current need the same columns, got {names} and {sorted(current)}"
        )
    unknown = sorted(set(categorical) - set(names))
    if unknown:
        raise SchemaError(f"domain classifier: categorical columns not in the data: {', '.join(unknown)}")
    sides = []
    for side, columns in (("reference", reference), ("current", current)):
        arrays = {n: np.ravel(np.asarray(columns[n])) for n in names}
        lengths = {n: len(a) for n, a in arrays.items()}
        if len(set(lengths.values())) != 1:
            raise SchemaError(f"domain classifier: {side} columns have different lengths: {lengths}")
        sides.append(arrays)
    return names, sides[0], sides[1]


def _design(
    names: list[str],
    ref: dict[str, npt.NDArray[Any]],
    cur: dict[str, npt.NDArray[Any]],
    ri: npt.NDArray[np.intp],
    ci: npt.NDArray[np.intp],
    categorical: Collection[str],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """The stacked reference-then-current matrix: numeric columns as floats, categoricals as codes."""
    columns, is_cat = [], []
    for name in names:
        r, c = ref[name][ri], cur[name][ci]
        numeric = name not in categorical and r.dtype.kind in "biuf" and c.dtype.kind in "biuf"
        columns.append(np.r_[r, c].astype(np.float64) if numeric else _category_codes(r, c))
        is_cat.append(not numeric)
    matrix: npt.NDArray[np.float64] = np.column_stack(columns)
    return matrix, np.array(is_cat)


def _category_codes(r: npt.NDArray[Any], c: npt.NDArray[Any]) -> npt.NDArray[np.float64]:
    """Codes by the reference sample's categories (most frequent first); others share one code; nulls NaN."""
    both = pd.Series(np.r_[r, c], dtype=object)
    nulls = both.isna().to_numpy()
    text = both.astype(str)
    known = text[: len(r)][~nulls[: len(r)]].value_counts().index[:_MAX_DOMAIN_CATEGORIES]
    codes: npt.NDArray[np.float64] = pd.Index(known).get_indexer(text).astype(np.float64)
    codes[codes < 0] = len(known)
    codes[nulls] = np.nan
    return codes


def _cv_auc(
    x: npt.NDArray[np.float64], y: npt.NDArray[np.int64], cat_mask: npt.NDArray[np.bool_], folds: int, seed: int
) -> float:
    """The AUC of out-of-fold scores of a shallow gradient-boosted tree model separating y=1 from y=0."""
    # scikit-learn is imported here, not with the module: reading a stored report needs none of it
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    scores = np.empty(len(y), dtype=np.float64)
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y):
        model = HistGradientBoostingClassifier(
            max_iter=20,
            max_depth=3,
            learning_rate=0.3,
            early_stopping=False,
            categorical_features=cat_mask if cat_mask.any() else None,
            random_state=seed,
        )
        model.fit(x[train], y[train])
        scores[test] = model.predict_proba(x[test])[:, 1]
    return float(roc_auc_score(y, scores))
