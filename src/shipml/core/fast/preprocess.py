"""The ColumnTransformer of shipml's pipelines, from record dicts straight to the model's input matrix."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler


class Unsupported(Exception):
    """The pipeline has a part the fast path cannot reproduce exactly."""


class NumericBlock:
    """SimpleImputer (any statistic) then StandardScaler, on float64, in sklearn's order of operations."""

    def __init__(self, columns: list[str], steps: list[Any]) -> None:
        self.columns = columns
        self.fill: np.ndarray | None = None
        self.mean: np.ndarray | None = None
        self.scale: np.ndarray | None = None
        for step in steps:
            if isinstance(step, SimpleImputer):
                if step.add_indicator or not np.all(np.isfinite(step.statistics_.astype(np.float64))):
                    raise Unsupported("numeric SimpleImputer with indicators or undefined statistics")
                if len(step.statistics_) != len(columns):
                    raise Unsupported("numeric SimpleImputer dropped an all-missing column")
                self.fill = step.statistics_.astype(np.float64)
            elif isinstance(step, StandardScaler):
                self.mean = step.mean_ if step.with_mean else None
                self.scale = step.scale_ if step.with_std else None
            else:
                raise Unsupported(f"numeric step {type(step).__name__}")

    def transform(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        nan = np.nan
        X = np.array([[nan if (v := r[c]) is None else v for c in self.columns] for r in rows], dtype=np.float64)
        if self.fill is not None:
            missing = np.isnan(X)
            if missing.any():
                X[missing] = np.broadcast_to(self.fill, X.shape)[missing]
        if self.mean is not None:
            X -= self.mean
        if self.scale is not None:
            X /= self.scale
        return X


class CategoricalBlock:
    """Constant/most-frequent imputer then OneHotEncoder(handle_unknown="ignore"), as float64 indicator columns."""

    def __init__(self, columns: list[str], steps: list[Any]) -> None:
        self.columns = columns
        self.fill: list[Any] | None = None
        self.offsets: list[dict[Any, int]] = []
        encoder = None
        for step in steps:
            if isinstance(step, SimpleImputer):
                if step.add_indicator:
                    raise Unsupported("categorical SimpleImputer with indicators")
                self.fill = list(step.statistics_)
            elif isinstance(step, OneHotEncoder):
                encoder = step
            else:
                raise Unsupported(f"categorical step {type(step).__name__}")
        if encoder is None:
            raise Unsupported("categorical columns without a OneHotEncoder")
        if encoder.handle_unknown != "ignore" or encoder.drop is not None:
            raise Unsupported("OneHotEncoder must have handle_unknown='ignore' and no drop")
        if getattr(encoder, "_infrequent_enabled", False):
            raise Unsupported("OneHotEncoder with infrequent categories")
        start = 0
        for cats in encoder.categories_:
            if any(isinstance(c, float) and np.isnan(c) for c in cats):
                raise Unsupported("OneHotEncoder with NaN as a category")
            self.offsets.append({c: start + i for i, c in enumerate(cats)})
            start += len(cats)
        self.width = start

    def transform(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        out = np.zeros((len(rows), self.width), dtype=np.float64)
        for j, column in enumerate(self.columns):
            index = self.offsets[j]
            fill = self.fill[j] if self.fill is not None else None
            for i, r in enumerate(rows):
                v = r[column]
                if v is None:
                    v = fill
                k = index.get(v)
                if k is not None:
                    out[i, k] = 1.0
        return out


class Preprocess:
    """A compiled ColumnTransformer: its blocks, in its output order."""

    def __init__(self, transformer: ColumnTransformer) -> None:
        if transformer.remainder != "drop" and not _all_columns_used(transformer):
            raise Unsupported("ColumnTransformer remainder other than drop")
        self.blocks: list[NumericBlock | CategoricalBlock] = []
        for name, step, columns in transformer.transformers_:
            if name == "remainder" or step == "drop":
                continue
            steps = list(step.named_steps.values()) if isinstance(step, Pipeline) else [step]
            cols = [str(c) for c in columns]
            if any(isinstance(s, OneHotEncoder) for s in steps):
                self.blocks.append(CategoricalBlock(cols, steps))
            else:
                self.blocks.append(NumericBlock(cols, steps))
        self.columns = [c for b in self.blocks for c in b.columns]

    def transform(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        parts = [b.transform(rows) for b in self.blocks]
        return parts[0] if len(parts) == 1 else np.hstack(parts)


def _all_columns_used(transformer: ColumnTransformer) -> bool:
    return all(name != "remainder" or len(cols) == 0 for name, _, cols in transformer.transformers_)
