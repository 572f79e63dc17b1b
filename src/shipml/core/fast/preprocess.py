"""The ColumnTransformer of shipml's pipelines, from record dicts or columns straight to the model's input matrix.

These blocks hold plain arrays and lists (``compile.py`` reads them out of the
fitted sklearn steps), so a packed predictor is rebuilt without importing sklearn.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd


class Unsupported(Exception):
    """The pipeline has a part the fast path cannot reproduce exactly."""


class NumericBlock:
    """SimpleImputer (any statistic) then StandardScaler, on float64, in sklearn's order of operations."""

    def __init__(
        self, columns: list[str], fill: np.ndarray | None, mean: np.ndarray | None, scale: np.ndarray | None
    ) -> None:
        self.columns = columns
        self.fill = fill
        self.mean = mean
        self.scale = scale
        self.width = len(columns)
        # one row is done with Python floats: the same IEEE double operations as numpy's, in the same order
        nan = float("nan")
        self._steps = [
            (
                c,
                float(fill[j]) if fill is not None else nan,
                float(mean[j]) if mean is not None else None,
                float(scale[j]) if scale is not None else None,
            )
            for j, c in enumerate(columns)
        ]

    def extend_one(self, row: Mapping[str, Any], out: list[float]) -> None:
        for column, fill, mean, scale in self._steps:
            v = row[column]
            x = fill if v is None else float(v)
            if x != x and v is not None:  # a NaN given as the value is missing too, as np.isnan treats it
                x = fill
            if mean is not None:
                x = x - mean
            if scale is not None:
                x = x / scale
            out.append(x)

    def transform(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        X = np.empty((len(rows), len(self.columns)), dtype=np.float64)
        for j, c in enumerate(self.columns):
            X[:, j] = np.array([r[c] for r in rows], dtype=np.float64)  # None becomes NaN
        return self._finish(X)

    def transform_columns(self, columns: Mapping[str, np.ndarray], n: int) -> np.ndarray:
        """The same matrix from float64 columns (NaN for missing): the same operations in the same order."""
        X = np.empty((n, len(self.columns)), dtype=np.float64)
        for j, c in enumerate(self.columns):
            X[:, j] = columns[c]
        return self._finish(X)

    def _finish(self, X: np.ndarray) -> np.ndarray:
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

    def __init__(self, columns: list[str], fill: list[Any] | None, categories: list[list[Any]]) -> None:
        self.columns = columns
        self.fill = fill
        self.categories = categories
        self.offsets: list[dict[Any, int]] = []
        start = 0
        for cats in categories:
            self.offsets.append({c: start + i for i, c in enumerate(cats)})
            start += len(cats)
        self.width = start
        self._steps = [
            (c, self.fill[j] if self.fill is not None else None, self.offsets[j]) for j, c in enumerate(columns)
        ]

    def extend_one(self, row: Mapping[str, Any], out: list[float]) -> None:
        base = len(out)
        out.extend([0.0] * self.width)
        for column, fill, index in self._steps:
            v = row[column]
            k = index.get(fill if v is None else v)
            if k is not None:
                out[base + k] = 1.0

    def transform(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        out = np.zeros((len(rows), self.width), dtype=np.float64)
        n = len(rows)
        for column, fill, index in self._steps:
            get = index.get
            hot = np.fromiter((get(fill if (v := r[column]) is None else v, -1) for r in rows), np.int64, n)
            known = hot >= 0
            out[np.flatnonzero(known), hot[known]] = 1.0
        return out

    def transform_columns(self, columns: Mapping[str, np.ndarray], n: int) -> np.ndarray:
        """The same indicators from object columns (None or NaN for missing), looked up a distinct value at a
        time: each distinct value goes through the same dict as a row's, so the matching rule is the same."""
        out = np.zeros((n, self.width), dtype=np.float64)
        for column, fill, index in self._steps:
            codes, uniques = pd.factorize(np.asarray(columns[column], dtype=object), use_na_sentinel=True)
            get = index.get
            lookup = np.fromiter((get(v, -1) for v in uniques), np.int64, len(uniques))
            missing = -1 if fill is None else get(fill, -1)
            # factorize's sentinel -1 (a missing value) picks the last slot: the fill's index
            hot = np.append(lookup, missing)[codes]
            known = hot >= 0
            out[np.flatnonzero(known), hot[known]] = 1.0
        return out


class Preprocess:
    """A compiled ColumnTransformer: its blocks, in its output order."""

    def __init__(self, blocks: list[NumericBlock | CategoricalBlock]) -> None:
        self.blocks = blocks
        self.columns = [c for b in self.blocks for c in b.columns]

    def transform(self, rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
        if len(rows) == 1:
            out: list[float] = []
            for block in self.blocks:
                block.extend_one(rows[0], out)
            return np.array([out], dtype=np.float64)
        parts = [b.transform(rows) for b in self.blocks]
        return parts[0] if len(parts) == 1 else np.hstack(parts)

    def transform_columns(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        """The matrix ``transform`` makes of the same values given as rows, bit for bit."""
        n = len(columns[self.columns[0]]) if self.columns else 0
        parts = [b.transform_columns(columns, n) for b in self.blocks]
        return parts[0] if len(parts) == 1 else np.hstack(parts)
