"""The unit of an experiment's analysis: what was randomised, the routing key.

Traffic is assigned per routing key (sticky), so a key's requests are not independent draws: the same customer
re-scored is right or wrong again, and a key that converts once converts again. Analysing each prediction as a unit
takes a design effect of 1 + (m - 1) ICC (m requests a key, ICC the within-key correlation) for 1: at 5 requests a
key and ICC 0.3 the variance is 2.2 times the one assumed, and identical variants come out "significant" about 30 %
of the time under peeking (review S2). Instead each key is one unit with two numbers, the sum of its outcomes and
the number of its labelled predictions, and a variant's metric is the ratio of the totals, R = sum(S) / sum(N),
whose variance is the delta method's (Deng, Knoblich & Lu 2018, "Applying the delta method in metric analytics",
KDD; the per-unit analysis of GrowthBook's ratio metrics and Spotify Confidence):

    Var(R) = [Var(S) - 2 R Cov(S, N) + R^2 Var(N)] / (K mean(N)^2)    over the K units,

so the per-unit variance handed to ``core.experiments.compare`` is K Var(R) and its n is K. Keys are independent
of one another (each is hashed to a variant on its own); within a key anything goes. A request without a key was
assigned on its own, so it is a unit of its own (N = 1). With one prediction a key this is the plain variance.

A 0/1 metric's variance is never taken below the binomial one of independent predictions at the rate
(successes + 1) / (predictions + 2) (Agresti & Caffo 2000): while an arm has no failure yet (accuracy near 1) or no
success (rare conversions) its sample variance is 0, and the difference's standard error would be the other
arm's alone (review S3). That floor also ignores a negative within-key correlation, which only makes it
conservative.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from shipml.core.sequential import Kind


@dataclass(frozen=True)
class UnitSums:
    """The sufficient statistics of a ratio metric over ``units`` units: sums over the units of S, N, S^2, N^2 and
    S N, where S is a unit's sum of outcomes and N its number of observations."""

    units: int
    observations: float
    total: float
    total_sq: float
    observations_sq: float
    cross: float

    @classmethod
    def of(cls, sums: ArrayLike, counts: ArrayLike) -> UnitSums:
        s = np.asarray(sums, dtype=np.float64)
        n = np.asarray(counts, dtype=np.float64)
        if s.shape != n.shape or s.ndim != 1:
            raise ValueError(f"sums and counts must be 1-D of one length, got {s.shape} and {n.shape}")
        if (n < 1).any():
            raise ValueError("every unit needs at least one observation")
        return cls(len(s), float(n.sum()), float(s.sum()), float(s @ s), float(n @ n), float(s @ n))

    @property
    def mean(self) -> float:
        """The ratio metric sum(S) / sum(N) (NaN without units)."""
        return self.total / self.observations if self.units else math.nan

    def unit_variance(self, kind: Kind) -> float:
        """K Var(R) by the delta method (the module docstring), with a 0/1 metric's binomial floor; NaN with
        fewer than two units."""
        k = self.units
        if k < 2:
            return math.nan
        r, mean_n = self.mean, self.observations / k
        var_s = (self.total_sq - self.total * self.total / k) / (k - 1)
        var_n = (self.observations_sq - self.observations * self.observations / k) / (k - 1)
        cov = (self.cross - self.total * self.observations / k) / (k - 1)
        variance = max(0.0, var_s - 2.0 * r * cov + r * r * var_n) / (mean_n * mean_n)
        if kind == "proportion":
            adjusted = (self.total + 1.0) / (self.observations + 2.0)
            variance = max(variance, adjusted * (1.0 - adjusted) / mean_n)
        return variance


def per_unit(outcomes: ArrayLike, keys: ArrayLike) -> UnitSums:
    """Each observation's outcome summed per routing key (None: a unit of its own)."""
    values = np.asarray(outcomes, dtype=np.float64)
    key_list = np.asarray(keys, dtype=object).tolist()
    if len(key_list) != len(values):
        raise ValueError(f"{len(values)} outcomes but {len(key_list)} keys")
    index: dict[object, int] = {}
    position = np.empty(len(values), dtype=np.int64)
    alone = len(values)  # keyless observations get indices past every key's
    for i, key in enumerate(key_list):
        if key is None:
            position[i] = alone
            alone += 1
        else:
            position[i] = index.setdefault(key, len(index))
    used = np.unique(position)
    compact = np.searchsorted(used, position)
    sums = np.bincount(compact, weights=values, minlength=len(used))
    counts = np.bincount(compact, minlength=len(used)).astype(np.float64)
    return UnitSums.of(sums, counts)
