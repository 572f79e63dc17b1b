"""ReferenceProfile: what the training data looked like, for drift detection later.

Numeric features keep decile bin edges and the reference share of rows in each
bin (plus the null share); categorical features keep category shares; the
prediction distribution is kept the same way.
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
    """Bin edges (inner edges; the outer bins are open) and the share of rows in each bin."""

    edges: tuple[float, ...]
    frequencies: tuple[float, ...]
    null_rate: float
    mean: float
    std: float


@dataclass(frozen=True)
class CategoricalProfile:
    """Share of rows per category (unseen categories at serve time count as drift)."""

    frequencies: dict[str, float]
    null_rate: float


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
        def num(x: dict[str, Any]) -> NumericProfile:
            return NumericProfile(tuple(x["edges"]), tuple(x["frequencies"]), x["null_rate"], x["mean"], x["std"])

        pred = d["prediction"]
        return cls(
            rows=d["rows"],
            numeric={k: num(v) for k, v in d["numeric"].items()},
            categorical={k: CategoricalProfile(**v) for k, v in d["categorical"].items()},
            prediction=num(pred) if "edges" in pred else CategoricalProfile(**pred),
        )


def numeric_profile(values: pd.Series | np.ndarray, bins: int = DEFAULT_BINS) -> NumericProfile:
    """Quantile bins of ``values``; repeated edges (discrete data) are merged."""
    s = pd.Series(values, dtype="float64")
    present = s.dropna().to_numpy()
    null_rate = float(s.isna().sum() / len(s)) if len(s) else 0.0
    if not len(present):
        return NumericProfile((), (1.0,), null_rate, float("nan"), float("nan"))
    inner = np.unique(np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1]))
    counts = np.bincount(np.searchsorted(inner, present, side="right"), minlength=len(inner) + 1)
    return NumericProfile(
        edges=tuple(float(e) for e in inner),
        frequencies=tuple(float(c) for c in counts / len(present)),
        null_rate=null_rate,
        mean=float(present.mean()),
        std=float(present.std()),
    )


def categorical_profile(values: pd.Series) -> CategoricalProfile:
    s = pd.Series(values)
    present = s.dropna().astype(str)
    shares = present.value_counts(normalize=True).sort_index()
    null_rate = float(s.isna().sum() / len(s)) if len(s) else 0.0
    return CategoricalProfile({str(k): float(v) for k, v in shares.items()}, null_rate)


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
