"""A feature's buckets on its reference profile (``Binning``), and the counting of values into them.

Drift is judged on COUNTS per bucket, so that a verdict over any window is a sum of small per-minute arrays: the
store's writer counts each row as it is written (``counts_of``), the drift statistics (``core.drift``) compare the
counts with the reference shares. A feature's buckets, built once per profile:

- numeric: the profile's ``len(edges) + 1`` bins (a value equal to an edge goes to the upper bin, as in
  ``core.profile``), then a null bucket;
- categorical: one bucket per reference category, then an unseen-category bucket, then a null bucket. Unseen
  categories and nulls are therefore drift like any other shift.

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
