"""ReferenceProfile: what the training data looked like, for drift detection later.

Numeric features keep decile bin edges, the reference share of rows in each bin (plus the null share), the mean
of the reference values inside each bin (where a Wasserstein distance puts the bin's mass) and the standard
deviation (its unit); categorical features keep category shares; the prediction distribution is kept the same
way. Every feature keeps the number of rows it was profiled on: the drift test weighs the reference's own noise
by it, and a category's count (share x rows) says which categories were seen once (Good-Turing's unseen mass).

Profiles registered before a field existed keep loading: a feature without ``rows`` takes the profile's, and one
without ``centres`` has them put by ``core.binning``'s stated rule (the midpoints of the inner bins).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from shipml.core.schema import FeatureSchema

DEFAULT_BINS = 10


@dataclass(frozen=True)
class NumericProfile:
    """Bin edges (inner edges; the outer bins are open) and the share of rows in each bin.

    ``std`` is the population standard deviation of the present values; ``centres`` the mean of the present values
    inside each bin (None in profiles made before it was recorded); ``rows`` the rows profiled, nulls included
    (None: not recorded, the profile's ``rows`` holds).
    """

    edges: tuple[float, ...]
    frequencies: tuple[float, ...]
    null_rate: float
    mean: float
    std: float
    centres: tuple[float, ...] | None = None
    rows: int | None = None


@dataclass(frozen=True)
class CategoricalProfile:
    """Share of rows per category (categories unseen in training are a bucket of their own at serve time).

    ``rows``: the rows profiled, nulls included (None: not recorded, the profile's ``rows`` holds).
    """

    frequencies: dict[str, float]
    null_rate: float
    rows: int | None = None


@dataclass(frozen=True)
class ReferenceProfile:
    """Per-feature reference distributions and the reference prediction distribution."""

    rows: int
    numeric: dict[str, NumericProfile]
    categorical: dict[str, CategoricalProfile]
    prediction: NumericProfile | CategoricalProfile

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReferenceProfile:
        rows = d["rows"]

        def num(x: dict[str, Any]) -> NumericProfile:
            centres = x.get("centres")
            return NumericProfile(
                tuple(x["edges"]),
                tuple(x["frequencies"]),
                x["null_rate"],
                x["mean"],
                x["std"],
                centres=None if centres is None else tuple(centres),
                rows=x.get("rows", rows),
            )

        def cat(x: dict[str, Any]) -> CategoricalProfile:
            return CategoricalProfile(x["frequencies"], x["null_rate"], rows=x.get("rows", rows))

        pred = d["prediction"]
        return cls(
            rows=rows,
            numeric={k: num(v) for k, v in d["numeric"].items()},
            categorical={k: cat(v) for k, v in d["categorical"].items()},
            prediction=num(pred) if "edges" in pred else cat(pred),
        )


def numeric_profile(values: pd.Series | np.ndarray, bins: int = DEFAULT_BINS) -> NumericProfile:
    """Quantile bins of ``values``; repeated edges (discrete data) are merged."""
    s = pd.Series(values, dtype="float64")
    present = s.dropna().to_numpy()
    null_rate = float(s.isna().sum() / len(s)) if len(s) else 0.0
    if not len(present):
        return NumericProfile((), (1.0,), null_rate, float("nan"), float("nan"), centres=(), rows=len(s))
    inner = np.unique(np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1]))
    bucket = np.searchsorted(inner, present, side="right")
    counts = np.bincount(bucket, minlength=len(inner) + 1)
    sums = np.bincount(bucket, weights=present, minlength=len(inner) + 1)
    # An empty bin (possible between interpolated quantiles of discrete data) sits at its midpoint.
    bounds = np.concatenate([[present.min()], inner, [present.max()]])
    centres = np.where(counts > 0, sums / np.maximum(counts, 1), (bounds[:-1] + bounds[1:]) / 2)
    return NumericProfile(
        edges=tuple(float(e) for e in inner),
        frequencies=tuple(float(c) for c in counts / len(present)),
        null_rate=null_rate,
        mean=float(present.mean()),
        std=float(present.std()),
        centres=tuple(float(c) for c in centres),
        rows=len(s),
    )


def categorical_profile(values: pd.Series) -> CategoricalProfile:
    s = pd.Series(values)
    present = s.dropna().astype(str)
    shares = present.value_counts(normalize=True).sort_index()
    null_rate = float(s.isna().sum() / len(s)) if len(s) else 0.0
    return CategoricalProfile({str(k): float(v) for k, v in shares.items()}, null_rate, rows=len(s))


def build_profile(df: pd.DataFrame, schema: FeatureSchema, predictions: np.ndarray) -> ReferenceProfile:
    """The profile of the training features and of the model's predictions on them.

    ``predictions`` is the positive-class probability (binary), the predicted
    label (multiclass) or the predicted value (regression).
    """
    pred: NumericProfile | CategoricalProfile
    if schema.target.task == "multiclass":
        pred = categorical_profile(pd.Series(predictions))
    else:
        pred = numeric_profile(predictions)
    return ReferenceProfile(
        rows=len(df),
        numeric={n: numeric_profile(df[n]) for n in schema.numeric_names},
        categorical={n: categorical_profile(df[n]) for n in schema.categorical_names},
        prediction=pred,
    )
