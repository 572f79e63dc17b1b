"""DriftReport: what one run of the monitoring job found, per served (version, variant) of a model.

The job writes it to the store as JSON; ``/metrics`` (gauges), ``shipml monitor report`` (the HTML page)
and the webhook all read that stored value, so they can never disagree.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from shipml.core.drift import FeatureDrift, Verdict, worst
from shipml.core.jsonable import from_jsonable, jsonable
from shipml.core.performance import PerformanceEstimate

REPORT_VERSION = 1


@dataclass(frozen=True)
class Distribution:
    """One feature's buckets over the window: the reference shares and the counts seen (for the report's plots)."""

    feature: str
    kind: str
    labels: tuple[str, ...]
    reference: tuple[float, ...]
    current: tuple[int, ...]


@dataclass(frozen=True)
class SeriesPoint:
    """The deciding statistic of one feature over one slice of the window (the report's "over time")."""

    start: float
    end: float
    feature: str
    statistic: str
    value: float
    rows: int
    verdict: Verdict


@dataclass(frozen=True)
class PerformanceEntry:
    """A realised or estimated metric over the window (or one slice), judged against the version's holdout value."""

    estimate: PerformanceEstimate
    holdout: float | None
    dropped: bool
    reason: str
    start: float | None = None  # set for the points of a series, None for the whole window
    end: float | None = None


@dataclass(frozen=True)
class SegmentReport:
    """One (version, variant) of the model over the window."""

    version: str
    variant: str
    rows: int
    verdict: Verdict
    drift: tuple[FeatureDrift, ...]
    distributions: tuple[Distribution, ...] = ()
    series: tuple[SeriesPoint, ...] = ()
    performance: tuple[PerformanceEntry, ...] = ()
    performance_series: tuple[PerformanceEntry, ...] = ()
    labels: dict[str, int] = field(default_factory=dict)  # pending, matured, labelled
    notes: tuple[str, ...] = ()  # what was not checked, and why

    @property
    def drifted(self) -> tuple[str, ...]:
        by_feature: dict[str, list[Verdict]] = {}
        for d in self.drift:
            if d.decisive:
                by_feature.setdefault(d.feature, []).append(d.verdict)
        return tuple(f for f, v in by_feature.items() if worst(v) == "drift")

    @property
    def performance_drop(self) -> bool:
        return any(p.dropped for p in self.performance)


@dataclass(frozen=True)
class DriftReport:
    """The job's result for one model and window. ``verdict``: drift if any segment drifted, else the most severe
    of the segments' verdicts; "no_data" when nothing was served in the window."""

    model: str
    since: float
    until: float
    created_at: float
    segments: tuple[SegmentReport, ...]
    version: int = REPORT_VERSION

    @property
    def verdict(self) -> str:
        if not self.segments:
            return "no_data"
        return worst([s.verdict for s in self.segments])

    @property
    def performance_drop(self) -> bool:
        return any(s.performance_drop for s in self.segments)

    @property
    def alarm(self) -> bool:
        """What the job's exit code 1 means: drift, or a performance drop."""
        return self.verdict == "drift" or self.performance_drop

    def to_json(self) -> str:
        return json.dumps(jsonable(asdict(self)), allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> DriftReport:
        d = json.loads(text)
        if d.get("version") != REPORT_VERSION:
            raise ValueError(f"drift report version {d.get('version')!r}, expected {REPORT_VERSION}")
        return from_jsonable(cls, d)
