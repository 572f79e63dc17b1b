"""Predictors: a model's outputs for validated rows. The sklearn pipeline itself is the reference."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from shipml.core.records import Value, frame_from_rows
from shipml.core.schema import FeatureSchema


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
    """What the server calls: rows in, outputs out."""

    name: str

    def predict(self, rows: Sequence[Mapping[str, Value]]) -> Outputs: ...


class PipelinePredictor:
    """Calls the fitted sklearn Pipeline on a DataFrame of the rows."""

    name = "pipeline"

    def __init__(self, pipeline: Any, schema: FeatureSchema) -> None:
        self.pipeline = pipeline
        self.schema = schema
        self.classification = schema.target.task != "regression"
        classes = getattr(pipeline, "classes_", ()) if self.classification else ()
        self.classes: tuple[Any, ...] = tuple(c.item() if hasattr(c, "item") else c for c in classes)

    def predict(self, rows: Sequence[Mapping[str, Value]]) -> Outputs:
        frame = frame_from_rows(self.schema, rows)
        if self.classification:
            return Outputs(self.classes, np.asarray(self.pipeline.predict_proba(frame)), None)
        return Outputs((), None, np.asarray(self.pipeline.predict(frame), dtype=np.float64))
