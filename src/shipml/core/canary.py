"""The canary's state machine: a candidate version's share of traffic raised step by step, or rolled back.

A canary of a registered model serves its candidate version beside the champion (the service's first variant),
taking the current step's percentage of the champion's traffic (and its own salt, so it meets other customers than
earlier canaries and experiments). Each step is judged on its own window, while the weights are constant and the
champion serves beside the candidate: at each check the controller brings the evidence of the current step only
(``step_window``), so something that changes over time and hits both versions alike (an error spike, slower
responses) is not blamed on the candidate, as it would be when its rows pile up in the late, high-weight steps and
the champion's in the early ones. Every step is a test of its own at ``alpha / judged steps`` (``step_alpha``), so the
whole canary rolls back an identical candidate with probability at most alpha. The last step (100 %) is never
judged: the champion serves nobody there, so there is nothing to compare with; promotion follows the last judged
step. Then:

- a guardrail crossed its boundary (violated), the primary metric is significantly worse, or the step's sample
  ratio is off (its units do not follow the step's weight: assignment or logging is broken, or the candidate's
  failures lose its units): rolled back at once, whatever the step's age (weight 0; the registry's aliases are not
  touched);
- the step is younger than its interval: nothing changes;
- the candidate answered fewer requests than the step needs (``Canary.needed``: ``min_requests`` when given, else
  what the latency guardrail needs to decide at the step's share, ``requests_needed``) during the step: held for
  ``traffic`` (the step's interval is
  over, but there is not enough evidence to go further); it never advances without traffic, and goes on once traffic
  returns;
- a guardrail does not hold yet (its interval is not yet wholly within its margin): held for ``evidence``, until it
  does or is violated; so a candidate goes on only once its non-inferiority is shown, never on the absence of
  evidence;
- otherwise the next step, or after the last judged step (the one before 100 %) the candidate is promoted: first
  the decision is written (``promoting``, the candidate serves 100 % meanwhile), then the registry's alias moves,
  then ``promoted`` (``promoted()``). A decision written can no longer be aborted, and an abort written first stops
  it: the controller writes each state with a compare-and-set on the one it read, and moves the alias only after
  the ``promoting`` write won; a ``promoting`` canary found later (the controller died in between) is finished.
  A canary stored at 100 % by an earlier version (which judged that step) is promoted at its next check.

A hold is logged once: the same hold at the next check (``Canary.hold`` unchanged) changes nothing.

Pure: no clock, no store; ``now`` is given. The JSON forms of ``Canary`` (the state every replica reads) and of
``CanaryEvent`` (a line of the canary's log) are what the store keeps.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from shipml.core.experiment_report import ChallengerResult
from shipml.core.experiments import ERROR_RATE, GUARDRAILS
from shipml.core.routing import derived_salt
from shipml.core.window import Window
from shipml.errors import ConfigError

Status = Literal["running", "held", "promoting", "rolled_back", "promoted", "aborted"]
STATUSES: tuple[Status, ...] = ("running", "held", "promoting", "rolled_back", "promoted", "aborted")
ACTIVE: tuple[Status, ...] = ("running", "held")  # checked at each tick; can be aborted
SERVING: tuple[Status, ...] = (*ACTIVE, "promoting")  # the candidate takes its step's share of the traffic
ENDED: tuple[Status, ...] = ("rolled_back", "promoted", "aborted")
Hold = Literal["traffic", "evidence"]  # why a step holds: too few requests, or a required guardrail not shown yet
Event = Literal["started", "advanced", "held", "promoting", "rolled_back", "promoted", "aborted"]
FULL = 100.0  # the last step: the candidate serves all of the champion's traffic, so that step is never judged
# The candidate's requests a step needs before its latency guardrail can show that an unchanged latency holds (the
# treatment's share over the champion's p99 within its 1-point margin), by the step's percentage, at the level of
# one of five judged steps (0.05 / 5): measured with the guardrail itself, and checked against it, by
# tests/statistics/test_canary.py. The larger the step, the fewer requests the champion serves beside it, so the
# more the candidate must answer.
LATENCY_REQUESTS: tuple[tuple[float, int], ...] = (
    (1.0, 2_330), (5.0, 3_030), (10.0, 3_540), (25.0, 5_170), (50.0, 8_300), (75.0, 15_760), (90.0, 33_810),
)  # fmt: skip
_TABLE_ALPHA = 0.01
# above the table's last step, what the champion must answer beside the candidate (its 10 % share at 90 %)
_CHAMPION_REQUESTS = 3_760


def requests_needed(percent: float, alpha: float) -> int:
    """Requests the candidate answers in a step of ``percent`` before the latency guardrail, at level ``alpha``,
    can decide: ``LATENCY_REQUESTS`` interpolated linearly between its steps (the need is convex in the share, so
    the chord errs on the side of enough), the first figure below 1 %, and above 90 % what keeps 3,760 of the
    champion's beside it; scaled by log(1/alpha) / log(100) when the level is below the table's (more judged
    steps), never scaled down (fewer need less; the figure then has some room)."""
    table = LATENCY_REQUESTS
    needed = float(table[-1][1])
    if percent <= table[0][0]:
        needed = float(table[0][1])
    elif percent > table[-1][0]:
        needed = _CHAMPION_REQUESTS * percent / max(FULL - percent, 1e-9)
    else:
        for (p0, n0), (p1, n1) in itertools.pairwise(table):
            if p0 < percent <= p1:
                needed = n0 + (n1 - n0) * (percent - p0) / (p1 - p0)
                break
    scale = max(1.0, math.log(1.0 / alpha) / math.log(1.0 / _TABLE_ALPHA))
    return math.ceil(needed * scale)


@dataclass(frozen=True)
class Evidence:
    """What the controller measured at a check: ``violations``, the reasons a guardrail (or the primary metric)
    crossed its boundary; ``undecided``, the guardrails that do not hold yet; ``step_requests``, the candidate's
    requests in the current step."""

    violations: tuple[str, ...] = ()
    step_requests: int = 0
    undecided: tuple[str, ...] = ()


@dataclass(frozen=True)
class Canary:
    """A canary of ``model``: ``candidate`` (a version) against the ``champion`` variant, at ``steps[step]`` percent
    of the traffic while it serves; ``updated_at`` is when the store last wrote it (the compare-and-set token)."""

    model: str
    candidate: str
    champion: str
    steps: tuple[float, ...]
    interval_s: float
    min_requests: int | None  # requests the candidate answers in a step before it goes on (None: ``needed``)
    started_at: float
    step_started_at: float
    step: int = 0
    status: Status = "running"
    reason: str = ""
    updated_at: float = field(default=0.0)
    # guardrails that must be shown to hold (non-inferior within their margin) before a step goes on; the others
    # only roll the canary back, once violated
    require: tuple[str, ...] = (ERROR_RATE,)
    hold: Hold | None = None  # while held: why (a check that finds the same hold changes nothing)
    salt: str = ""  # the canary's own routing salt ("": derived from the model and the candidate, routing_salt)

    @property
    def active(self) -> bool:
        """Running or held: checked at each tick, and it can be aborted."""
        return self.status in ACTIVE

    @property
    def serving(self) -> bool:
        """Active or promoting: the candidate serves its step's share."""
        return self.status in SERVING

    @property
    def ended(self) -> bool:
        return self.status in ENDED

    @property
    def percent(self) -> float:
        """The current step's share of traffic in percent (0 once it ended)."""
        return self.steps[self.step] if self.serving else 0.0

    @property
    def weight(self) -> float:
        """The candidate's routing weight now, in [0, 1]."""
        return self.percent / 100.0

    @property
    def reference(self) -> str:
        return f"{self.model}/{self.candidate}"

    @property
    def routing_salt(self) -> str:
        """The salt of the canary's hash domain: its own, else derived from the model and the candidate version
        (the same in every worker and replica: all read this state)."""
        return self.salt or derived_salt("canary", self.model, self.candidate)

    def needed(self, alpha: float) -> int:
        """Requests the candidate must answer in the current step before it goes on: ``min_requests`` when given,
        else what the latency guardrail needs to decide at this step's share and level (``requests_needed``)."""
        if self.min_requests is not None:
            return self.min_requests
        return requests_needed(self.percent, step_alpha(self, alpha))

    @property
    def judged(self) -> int:
        """How many steps are judged: those below 100 %."""
        return sum(1 for s in self.steps if s < FULL)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Canary:
        data: dict[str, Any] = json.loads(text)
        data["steps"] = tuple(float(s) for s in data["steps"])
        data["require"] = tuple(data.get("require", (ERROR_RATE,)))
        return cls(**data)


@dataclass(frozen=True)
class CanaryEvent:
    """A line of the canary's log: what happened (``event``) and where the canary stood right after it (the
    step's percentage even once it ended); ``ts``: when it was logged."""

    event: Event
    candidate: str
    step: int
    percent: float
    status: Status
    reason: str
    ts: float = 0.0

    @classmethod
    def of(cls, event: Event, state: Canary) -> CanaryEvent:
        return cls(event, state.candidate, state.step, state.steps[state.step], state.status, state.reason,
                   state.updated_at)  # fmt: skip

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str, ts: float | None = None) -> CanaryEvent:
        """The event back from ``to_json`` (``ts``: the store's time of the line, which wins when given)."""
        data: dict[str, Any] = json.loads(text)
        data["percent"] = float(data["percent"])
        if ts is not None:
            data["ts"] = ts
        return cls(**data)


@dataclass(frozen=True)
class Change:
    """What a check did: the new state, and the event to log (None: nothing happened). ``promote``: the last step
    is over and held, ``state`` is "promoting": the caller writes it (compare-and-set), moves the registry's alias
    only if that write won, then writes ``promoted(state)``."""

    state: Canary
    event: Event | None = None
    promote: bool = False

    def logged(self) -> CanaryEvent | None:
        """The line this change adds to the canary's log (None: nothing happened)."""
        return None if self.event is None else CanaryEvent.of(self.event, self.state)


def parse_steps(text: str) -> tuple[float, ...]:
    """``1,5,10,25,50,100``: increasing percentages in (0, 100] ending at 100; a one-line error otherwise."""
    try:
        steps = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise ConfigError(
            [f"--steps: expected percentages separated by commas, e.g. 1,5,25,100, got {text!r}"]
        ) from None
    check_steps(steps)
    return steps


def parse_required(text: str) -> tuple[str, ...]:
    """``error_rate,latency_p99`` (or ``none``): the guardrails a step needs shown to hold; a one-line error for
    a name that is not a guardrail."""
    if text.strip().lower() == "none":
        return ()
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [n for n in names if n not in GUARDRAILS]
    if unknown:
        raise ConfigError([f"--require: {', '.join(unknown)} is not a guardrail (guardrails: {', '.join(GUARDRAILS)})"])
    return names


def check_steps(steps: Sequence[float]) -> None:
    if not steps or not all(math.isfinite(s) and 0.0 < s <= 100.0 for s in steps):
        raise ConfigError([f"--steps: every step must be a percentage in (0, 100], got {list(steps)}"])
    if any(b <= a for a, b in itertools.pairwise(steps)):
        raise ConfigError([f"--steps: steps must increase, got {list(steps)}"])
    if steps[-1] != FULL:
        raise ConfigError([f"--steps: the last step must be 100 (the candidate serves everyone before it is promoted), "
                           f"got {steps[-1]:g}"])  # fmt: skip
    if len(steps) < 2:
        raise ConfigError(["--steps: at least one step must be below 100 (a step is judged against the champion "
                           "serving beside it, and at 100 % it serves nobody)"])  # fmt: skip


def step_alpha(state: Canary, alpha: float) -> float:
    """The level of each step's tests: ``alpha`` shared by the judged steps (Bonferroni), so that over the whole
    canary an identical candidate is rolled back with probability at most ``alpha``."""
    return alpha / max(1, state.judged)


def step_window(state: Canary, now: float, settle_s: float, served_since: float | None, lag_s: float = 0.0) -> Window:
    """The current step's window: from its first request to the candidate (``served_since``; None: none yet, an
    empty window), and at least ``settle_s`` after the step started, to ``lag_s`` before ``now`` (each at most half
    the step's interval).

    The start: the workers take up to a poll, and the first step a load, to serve the new weight, and rows routed at
    the old one would bias the step's sample ratio. The end: a row is in the store a commit after its time, and a
    request that both versions answer is logged a version at a time (each part committed before the next is
    predicted), so the last moment's requests may be there in part, the champion's rows without the candidate's,
    which reads as a sample ratio mismatch in a step of a thousand rows; the caller gives the longest a request
    waits for its commit (``store.timeout_s``)."""
    half = state.interval_s / 2.0
    since = state.step_started_at + min(settle_s, half)
    since = max(since, now if served_since is None else served_since)
    until = now - min(lag_s, half)
    return Window(since, max(since, until) + 1e-6)


def evidence_of(challenger: ChallengerResult, step_requests: int, require: Sequence[str], min_count: int) -> Evidence:
    """A check's evidence from the step's comparison of the candidate with the champion: what rolls it back (a
    guardrail violated, the primary metric significantly worse once both have ``min_count`` units, a sample ratio
    mismatch) and which of the ``require``d guardrails do not hold yet."""
    violations = [f"guardrail {g.name} crossed its boundary: candidate - champion in [{g.lower:+.4g}, "
                  f"{g.upper:+.4g}], margin {g.margin:g}" for g in challenger.guardrails if g.status == "violated"]  # fmt: skip
    primary = challenger.primary
    if primary.worse and min(primary.control.n, primary.treatment.n) >= min_count:
        d = primary.difference
        violations.insert(0, f"{primary.metric} is significantly worse: [{d.lower:+.4g}, {d.upper:+.4g}]")
    if challenger.decision.verdict == "unhealthy":
        violations.insert(0, "in this step: " + "; ".join(challenger.decision.reasons))
    undecided = [
        f"guardrail {g.name} in [{g.lower:+.4g}, {g.upper:+.4g}], not yet within margin {g.margin:g}"
        for g in challenger.guardrails
        if g.status == "undecided" and g.name in require
    ]
    return Evidence(tuple(violations), step_requests, tuple(undecided))


def check(state: Canary, evidence: Evidence, now: float, alpha: float = 0.05) -> Change:
    """One check of an active canary (see the module's docstring); an ended one does not change. ``alpha``: the
    whole canary's level (``experiments.alpha``), for the requests a step needs when ``min_requests`` is None."""
    if not state.active:
        return Change(state)
    if state.percent >= FULL:  # stored at 100 % by an earlier version: its last judged step held
        return _promoting(state, now)
    if evidence.violations:
        reason = "; ".join(evidence.violations)
        return Change(replace(state, status="rolled_back", reason=reason, hold=None, updated_at=now), "rolled_back")
    if now - state.step_started_at < state.interval_s:
        return Change(state)
    hold = _hold(state, evidence, alpha)
    if hold is not None:
        if state.status == "held" and state.hold == hold:
            return Change(state)  # the same hold as at the last check: nothing new to log
        if hold == "traffic":
            why = (
                f"not enough traffic: the candidate answered {evidence.step_requests} request(s) in this step, "
                f"under the {state.needed(alpha)} needed to go on"
            )
        else:
            why = "waiting for evidence: " + "; ".join(evidence.undecided)
        reason = f"held at {state.percent:g} %: {why}"
        return Change(replace(state, status="held", reason=reason, hold=hold, updated_at=now), "held")
    if state.steps[state.step + 1] >= FULL:
        return _promoting(state, now)
    reason = f"guardrails hold after {state.percent:g} % with {evidence.step_requests} request(s)"
    advanced = replace(
        state, step=state.step + 1, step_started_at=now, status="running", reason=reason, hold=None, updated_at=now
    )
    return Change(advanced, "advanced")


def _promoting(state: Canary, now: float) -> Change:
    """The last judged step held: the decision to promote, the candidate at 100 % while the alias moves."""
    reason = f"every step held its guardrails; promoting version {state.candidate}"
    last = len(state.steps) - 1
    promoting = replace(state, step=last, status="promoting", reason=reason, hold=None, updated_at=now)
    return Change(promoting, "promoting", promote=True)


def _hold(state: Canary, evidence: Evidence, alpha: float) -> Hold | None:
    """Why the step cannot go on yet (None: it can)."""
    if evidence.step_requests < state.needed(alpha):
        return "traffic"
    return "evidence" if evidence.undecided else None


def promoted(state: Canary, now: float) -> Change:
    """A ``promoting`` canary whose registry alias has moved: promoted (anything else does not change)."""
    if state.status != "promoting":
        return Change(state)
    reason = f"every step held its guardrails; version {state.candidate} promoted"
    return Change(replace(state, status="promoted", reason=reason, updated_at=now), "promoted")


def abort(state: Canary, now: float, reason: str) -> Change:
    """Stop an active canary by hand: weight 0, aliases untouched."""
    if not state.active:
        return Change(state)
    return Change(replace(state, status="aborted", reason=reason, hold=None, updated_at=now), "aborted")
