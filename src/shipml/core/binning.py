"""A feature's buckets on its reference profile (``Binning``), and the counting of values into them.

Drift is judged on COUNTS per bucket, so that a verdict over any window is a sum of small per-minute arrays: the
store's writer counts each row as it is written (``counts_of``), the drift statistics (``core.drift``) compare the
counts with the reference shares. A feature's buckets, built once per profile:

- numeric: the profile's ``len(edges) + 1`` bins (a value equal to an edge goes to the upper bin, as in
  ``core.profile``), then a null bucket;
- categorical: one bucket per reference category, then an unseen-category bucket, then a null bucket. Unseen
  categories and nulls are therefore drift like any other shift.

What the reference says of each bucket (``Binning.reference``, shares summing to 1) and how sure it is of it
(``Binning.rows``, the training rows the shares were counted on: the drift test compares the window's counts with
``reference x rows`` as the other sample, so the reference's own noise is weighed too):

- a categorical's unseen bucket expects the Good-Turing share of new categories: the share of training rows whose
  category was seen exactly once (the count of a category is its share x the present rows). A long tail profiled
  on few rows thus expects the rare categories it missed, instead of calling them drift for ever; the seen
  categories give up that share in proportion. A category that is really new still stands out as a large share.
  The drift test compares counts with counts, so it reads the shares as training counted them (``counted``: the
  unseen bucket at 0) and merges the unseen bucket with the categories rare in both samples (``core.drift``).
- a numeric feature's bins sit at ``centres`` (the mean of the reference values in each bin) on the number line,
  in units of ``scale`` (the reference's standard deviation), for a Wasserstein distance from counts. A profile
  made before the centres were recorded puts each inner bin at its midpoint and each open outer bin half its
  neighbour's width beyond its edge (with a single edge: one standard deviation beyond it).

The model's output is binned like a feature, under the name ``PREDICTION``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pandas as pd

from shipml.core.profile import CategoricalProfile, NumericProfile, ReferenceProfile
from shipml.errors import SchemaError

Counts = npt.NDArray[np.int64]
Shares = npt.NDArray[np.float64]

PREDICTION = "__prediction__"  # the feature name under which the model's output is binned and reported
UNSEEN = "__unseen__"
NULL = "__null__"


@dataclass(frozen=True, eq=False)
class Binning:
    """A feature's buckets and the reference share of each (built once per profile, read-only)."""

    feature: str
    kind: Literal["numeric", "categorical"]
    reference: Shares  # one share per bucket, summing to 1 (nulls and unseen included)
    edges: npt.NDArray[np.float64] = field(default_factory=lambda: np.empty(0))
    categories: tuple[str, ...] = ()
    _index: dict[str, int] = field(default_factory=dict, repr=False)
    rows: int | None = None  # training rows behind ``reference``; None: unknown, the shares are taken as exact
    centres: npt.NDArray[np.float64] = field(default_factory=lambda: np.empty(0))  # numeric: each bin's place
    scale: float | None = None  # numeric: the reference's standard deviation; None when it has no spread
    counted: Shares | None = None  # categorical: the shares as training counted them (unseen: 0); None: reference

    @classmethod
    def of(cls, feature: str, profile: NumericProfile | CategoricalProfile, rows: int | None = None) -> Binning:
        """The buckets of ``feature`` from its profile: expected shares are frequency x (1 - null_rate), then nulls.

        ``rows``: the training rows, when the feature's profile does not record them (profiles made before it did).
        """
        present = 1.0 - profile.null_rate
        rows = profile.rows if profile.rows is not None else rows
        if isinstance(profile, NumericProfile):
            edges = np.asarray(profile.edges, dtype=np.float64)
            freqs = np.asarray(profile.frequencies, dtype=np.float64)
            if len(freqs) != len(edges) + 1:
                raise SchemaError(
                    f"profile of feature {feature!r}: {len(edges)} bin edges need {len(edges) + 1} "
                    f"frequencies, got {len(freqs)}"
                )
            reference = np.append(freqs * present, profile.null_rate)
            scale = profile.std if np.isfinite(profile.std) and profile.std > 0 else None
            return cls(
                feature,
                "numeric",
                _read_only(reference),
                edges=_read_only(edges),
                rows=rows,
                centres=_read_only(_centres(profile, edges, scale)),
                scale=scale,
            )
        categories = tuple(profile.frequencies)
        shares = np.array([profile.frequencies[c] for c in categories], dtype=np.float64)
        unseen = unseen_share(shares, None if rows is None else rows * present)
        reference = np.concatenate([shares * (1.0 - unseen) * present, [unseen * present, profile.null_rate]])
        counted = np.concatenate([shares * present, [0.0, profile.null_rate]])
        index = {c: i for i, c in enumerate(categories)}
        return cls(
            feature,
            "categorical",
            _read_only(reference),
            categories=categories,
            _index=index,
            rows=rows,
            counted=_read_only(counted),
        )

    @property
    def training_shares(self) -> Shares:
        """The shares as training counted them (a categorical's unseen bucket at 0), what the drift test reads."""
        return self.reference if self.counted is None else self.counted

    @property
    def unseen(self) -> int | None:
        """The index of the unseen-category bucket (categoricals), else None."""
        return self.buckets - 2 if self.kind == "categorical" else None

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
            features={name: Binning.of(name, p, profile.rows) for name, p in profiles.items()},
            prediction=Binning.of(PREDICTION, profile.prediction, profile.rows),
        )

    @property
    def all(self) -> dict[str, Binning]:
        """The features' binnings and the prediction's, under ``PREDICTION``."""
        return {**self.features, PREDICTION: self.prediction}


def unseen_share(shares: Shares, present_rows: float | None) -> float:
    """Good-Turing's estimate of the share of future rows whose category training never saw: the share of training
    rows whose category was seen exactly once (a category's count is its share x the present rows; 0 when the row
    count is unknown)."""
    if present_rows is None or present_rows <= 0 or not len(shares):
        return 0.0
    counts = np.rint(shares * present_rows)
    return float(min(1.0, np.count_nonzero(counts == 1) / present_rows))


def _centres(profile: NumericProfile, edges: npt.NDArray[np.float64], scale: float | None) -> npt.NDArray[np.float64]:
    """Where each bin sits on the number line: the recorded means, or (older profiles) the stated rule."""
    if profile.centres is not None and len(profile.centres) == len(edges) + 1:
        return np.asarray(profile.centres, dtype=np.float64)
    if len(edges) == 0:
        return np.zeros(1)
    if len(edges) == 1:
        spread = scale or 1.0
        return np.array([edges[0] - spread, edges[0] + spread])
    inner = (edges[:-1] + edges[1:]) / 2
    low = edges[0] - (edges[1] - edges[0]) / 2
    high = edges[-1] + (edges[-1] - edges[-2]) / 2
    return np.concatenate([[low], inner, [high]])


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
