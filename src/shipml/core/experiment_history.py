"""An experiment's reports at cumulative cuts of a window (``ExperimentHistory``): how its intervals narrowed while
the data came in. Made by ``pipelines.experiment_history``, drawn by the report page's experiment section."""

from __future__ import annotations

import json
from dataclasses import dataclass

from shipml.core.experiment_report import ExperimentReport
from shipml.core.jsonable import from_jsonable, jsonable


@dataclass(frozen=True)
class ExperimentHistory:
    """The experiment's reports over [since, cut) for increasing cuts; the last cut is the window's end, so the
    last point is the report of the whole window."""

    points: tuple[ExperimentReport, ...]

    def __post_init__(self) -> None:
        if not self.points:
            raise ValueError("an experiment history needs at least one report")

    @property
    def report(self) -> ExperimentReport:
        """The report of the whole window."""
        return self.points[-1]

    def to_json(self) -> str:
        return json.dumps({"points": [jsonable(p) for p in self.points]})

    @classmethod
    def from_json(cls, text: str) -> ExperimentHistory:
        return cls(tuple(from_jsonable(ExperimentReport, p) for p in json.loads(text)["points"]))
