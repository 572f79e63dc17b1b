"""Predictors: a model's outputs for validated rows or columns. The sklearn pipeline itself is the reference."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from shipml.core.records import Value, frame_from_rows
from shipml.core.schema import FeatureSchema

Columns = Mapping[str, np.ndarray]
"""Validated features as columns, one array per feature name, all of one length: float64 for numeric, integer
and boolean features (NaN for missing), object arrays of strings for categoricals (None or NaN for missing)."""


@dataclass(frozen=True)
class Outputs:
    """Per-row outputs: class probabilities (columns in ``classes`` order) or regression values."""

    classes: tuple[Any, ...]
    proba: np.ndarray | None
    values: np.ndarray | None

    def labels(self) -> list[Any]:
        """Predicted classes derived from the probabilities (no second model call)."""
        assert self.proba is not None  # noqa: S101 - classification only
        picks = np.argmax(self.proba, axis=1)
        return [self.classes[i] for i in picks]


class Predictor(Protocol):
    """What the server and offline scoring call: rows in (or columns in), outputs out.

    ``predict_columns`` gives, bit for bit, what ``predict`` gives for the same values as rows, without a
    dict per row: what scoring a file (``shipml predict``, Spark) and big batches use.

    ``inline_max_rows``: calls of up to this many rows are cheap enough to make on the event loop
    (0: always in a worker thread). ``batching_pays``: grouping concurrent requests into one call is
    worth the wait (a per-call overhead dominates, as with a pipeline's DataFrame and sklearn checks).
    The server decides from these, never from ``name``, which is for people (``GET /model``, logs).
    """

    name: str
    inline_max_rows: int
    batching_pays: bool

    def predict(self, rows: Sequence[Mapping[str, Value]]) -> Outputs: ...

    def predict_columns(self, columns: Columns) -> Outputs: ...


def columns_from_frame(frame: pd.DataFrame, schema: FeatureSchema) -> dict[str, np.ndarray]:
    """A frame's features as ``Columns``: float64 numerics, object categoricals (missing as NaN)."""
    out: dict[str, np.ndarray] = {}
    for f in schema.features:
        s = frame[f.name]
        if f.is_numeric:
            out[f.name] = s.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            out[f.name] = s.to_numpy(dtype=object)
    return out


class PipelinePredictor:
    """Calls the fitted sklearn Pipeline on a DataFrame of the rows."""

    name = "pipeline"
    inline_max_rows = 0  # a DataFrame and sklearn per call: milliseconds, never on the event loop
    batching_pays = True

    def __init__(self, pipeline: Any, schema: FeatureSchema) -> None:
        self.pipeline = pipeline
        self.schema = schema
        self.classification = schema.target.task != "regression"
        classes = getattr(pipeline, "classes_", ()) if self.classification else ()
        self.classes: tuple[Any, ...] = tuple(c.item() if hasattr(c, "item") else c for c in classes)

    def predict(self, rows: Sequence[Mapping[str, Value]]) -> Outputs:
        return self._outputs(frame_from_rows(self.schema, rows))

    def predict_columns(self, columns: Columns) -> Outputs:
        # the same frame as ``frame_from_rows`` makes: float64 numerics, object strings, NaN for missing
        data: dict[str, Any] = {}
        for f in self.schema.features:
            column = columns[f.name]
            if f.is_numeric:
                data[f.name] = np.asarray(column, dtype=np.float64)
            else:
                values = pd.Series(column, dtype=object)
                data[f.name] = values.where(values.notna(), np.nan)
        return self._outputs(pd.DataFrame(data))

    def _outputs(self, frame: pd.DataFrame) -> Outputs:
        if self.classification:
            return Outputs(self.classes, np.asarray(self.pipeline.predict_proba(frame)), None)
        return Outputs((), None, np.asarray(self.pipeline.predict(frame), dtype=np.float64))
