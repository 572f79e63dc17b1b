"""ExperimentReport: what ``shipml ab report`` found over a window, and its parts (each variant's summary, each
challenger's and shadow's comparison with the champion).

``ExperimentJob`` (pipelines/experiments.py) builds it; the store keeps it as JSON (``store.experiments``); the
service's gauges, ``shipml ab report`` and the monitoring report's experiment section read that value.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from shipml.core.experiments import Comparison, Decision, Guardrail, SampleRatio, VariantStats, Verdict
from shipml.core.jsonable import from_jsonable, jsonable
from shipml.core.prediction import Role
from shipml.core.sequential import Kind, SampleSize


@dataclass(frozen=True)
class VariantSummary:
    """One variant over the window: what it served and its primary metric.

    ``requests``: its logged rows (any status); ``errors``: those not "ok"; ``units``: distinct routing keys of its
    answered rows plus its answered rows without a key; ``matured``/``labelled``: answered rows old enough to have
    feedback, and those that have it (a shadow's through the primary row it is joined to); ``p99_ms``: the p99 of
    its answered requests' latency."""

    name: str
    role: Role
    model: str  # the configured registry reference
    version: str | None  # what the reference resolves to now (None when the registry cannot say)
    share: float  # the routing weight, or a shadow's fraction
    requests: int
    errors: int
    units: int
    keyed: int  # answered rows that carried a routing key
    matured: int
    labelled: int
    metric: VariantStats
    p99_ms: float = math.nan  # the p99 latency of its answered requests (NaN without any)


@dataclass(frozen=True)
class ChallengerResult:
    """A challenger against the champion: the primary metric, the guardrails, the sample size still needed for
    ``experiments.mde`` (None when it cannot be computed, see the report's notes) and the verdict."""

    variant: str
    primary: Comparison
    guardrails: tuple[Guardrail, ...]
    sample_size: SampleSize | None
    decision: Decision


@dataclass(frozen=True)
class ShadowResult:
    """A shadow against the champion on ground truth it never served: the comparison of the primary metric,
    how many of its rows were joined to a primary row by routing key, and its agreement with the champion
    (classification: share of the champion's joined requests with the same label; regression: NaN, and
    ``mean_abs_difference`` between the two answers instead)."""

    variant: str
    comparison: Comparison
    joined: int
    agreement: float
    mean_abs_difference: float
    compared: int  # joined requests the champion answered (what agreement is computed on)


@dataclass(frozen=True)
class ExperimentReport:
    """The experiment of ``model`` over [since, until): every variant, the challengers' and shadows' comparisons
    with the champion, the sample ratio check and the verdict (``winner``: the challenger to ship, if any)."""

    model: str
    since: float
    until: float
    created: float
    metric: str  # accuracy or negative_absolute_error (higher is better for both)
    kind: Kind
    champion: str
    variants: tuple[VariantSummary, ...]
    srm: SampleRatio
    challengers: tuple[ChallengerResult, ...]
    shadows: tuple[ShadowResult, ...]
    verdict: Verdict
    reasons: tuple[str, ...]
    winner: str | None
    notes: tuple[str, ...] = ()

    def variant(self, name: str) -> VariantSummary:
        return next(v for v in self.variants if v.name == name)

    def to_json(self) -> str:
        """JSON of the whole report (NaN as null; comparisons and guardrails also carry their verdicts)."""
        return json.dumps(jsonable(self))

    @classmethod
    def from_json(cls, text: str) -> ExperimentReport:
        return from_jsonable(cls, json.loads(text))
