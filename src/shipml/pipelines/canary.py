"""`shipml deploy canary`: the controller that raises a candidate version's traffic step by step, judged against the
champion from the prediction store, and rolls it back or promotes it through the registry.

The canary's state is a row of the store (``core.canary.Canary``): every replica of the service reads it on its poll
and serves the candidate as the variant ``canary`` with the current weight (server/canary.py), so a replica that
restarts, or a new one, follows at once.

Safe to run from several processes, and against an operator's ``deploy abort``:
- every write is a compare-and-set on the state it read (``store.canaries.save(..., expect=updated_at)``): a step,
  a rollback or an abort is written only if nobody wrote the canary since;
- the promotion is decided before it is done: ``promoting`` is written first, the registry's alias moves only if
  that write won, then ``promoted`` is written. So an abort that won stops the promotion, and an abort after the
  decision is refused (the alias is about to move: roll back with ``shipml models rollback``). A ``promoting``
  canary found by any controller (its own died between the two writes) is finished;
- one controller drives at a time: each tick takes the store's lease ``canary:<model>`` for a few checks
  (``LEASE_CHECKS`` x ``check_every_s``), renews it at every tick and releases it on ``close``, so a restarted
  controller drives at once; the others only follow and say who drives (``Tick.driver``).

Evidence at each check (``ExperimentJob`` with the champion and the candidate as its two variants, over the canary's
whole life, since the anytime-valid intervals stay valid however often they are looked at): the candidate's
guardrails against the champion (error rate, and whatever else ``ab report`` judges) and its primary metric when
feedback has matured. A guardrail whose interval lies wholly beyond its margin, or a primary metric significantly
worse, rolls the canary back. The sample ratio check of ``ab report`` is not used: the weights change at each step,
so the units of the whole canary are not expected to follow any one of them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import structlog

from shipml.adapters.registry import MlflowRegistry, ModelRef
from shipml.adapters.store import PredictionStore
from shipml.adapters.store.leases import new_holder
from shipml.config import Settings
from shipml.core.canary import Canary, CanaryEvent, Event, Evidence, abort, check, promoted
from shipml.core.experiments import ERROR_RATE
from shipml.core.prediction import CANARY_VARIANT, DEFAULT_VARIANT
from shipml.core.window import Window
from shipml.errors import CanaryRefused, ConfigError, RegistryError
from shipml.pipelines.experiments import ExperimentJob
from shipml.pipelines.promote import promote

log = structlog.get_logger("shipml.canary")
LEASE = "canary:{model}"
LEASE_CHECKS = 3  # the lease lasts this many checks: a controller that died stops blocking the others soon
LEASE_MIN_S = 5.0  # and at least this long, so that computing the evidence does not outlast it
ABORT_TRIES = 5  # an abort re-reads and tries again when a tick wrote the canary meanwhile


@dataclass(frozen=True)
class Tick:
    """What one check saw and did: the canary after it (None: no canary), the events it logged, in order (none:
    nothing happened), whether this process drives the canary (holds its lease), and who does (None: nobody, e.g.
    the canary ended)."""

    canary: Canary | None
    events: tuple[Event, ...]
    driving: bool
    driver: str | None

    @property
    def event(self) -> Event | None:
        """The last event logged (None: none)."""
        return self.events[-1] if self.events else None


class CanaryController:
    """Starts, checks, aborts and reads the canary of a model; see the module's docstring."""

    def __init__(
        self, settings: Settings, store: PredictionStore, registry: MlflowRegistry, *, check_every_s: float = 1.0
    ) -> None:
        """``check_every_s``: how often the caller ticks (the lease lasts ``LEASE_CHECKS`` of them)."""
        self.settings = settings
        self.store = store
        self.registry = registry
        self.holder = new_holder()
        self.lease_s = max(LEASE_MIN_S, LEASE_CHECKS * check_every_s)
        self._leases: set[str] = set()

    def close(self) -> None:
        """Release the leases this controller holds: another controller drives at once."""
        for name in sorted(self._leases):
            self.store.leases.release(name, self.holder)
        self._leases.clear()

    def champion(self) -> tuple[str, str]:
        """(variant name, registry reference) of the served champion: the first of serve.variants, else serve.model."""
        serve = self.settings.serve
        if serve.variants:
            return serve.variants[0].name, serve.variants[0].model
        return DEFAULT_VARIANT, self.settings.serve_ref()

    def read(self, model: str) -> Canary | None:
        return self.store.canaries.read(model)

    def start(
        self,
        model: str,
        version: str,
        steps: tuple[float, ...],
        interval_s: float,
        min_requests: int,
        require: tuple[str, ...] = (ERROR_RATE,),
    ) -> tuple[Canary, bool]:
        """Begin a canary of ``model`` version ``version`` (or resume the one of that same version that has not
        ended); the canary and whether it was started now."""
        name, reference = self.champion()
        champion_model = ModelRef.parse(reference).name
        if champion_model != model:
            raise ConfigError([f"deploy canary: the service serves {champion_model!r} (serve), not {model!r}"])
        info = self.registry.resolve(ModelRef.parse(f"{model}/{version}"))  # unknown version: one line, nothing written
        existing = self.read(model)
        if existing is not None and not existing.ended:
            if existing.candidate == info.version:
                return existing, False
            raise CanaryRefused(
                f"deploy canary: a canary of {model} is active (version {existing.candidate}, {existing.percent:g} %, "
                f"{existing.status}); abort it first: shipml deploy abort {model}"
            )
        try:
            serving = self.registry.resolve(ModelRef.parse(reference)).version
        except RegistryError:
            serving = None
        if serving == info.version:
            raise CanaryRefused(f"deploy canary: {model}/{info.version} is what {reference} serves already")
        now = time.time()
        canary = Canary(model, info.version, name, steps, interval_s, min_requests, now, now, updated_at=now,
                        reason=f"started at {steps[0]:g} %", require=require)  # fmt: skip
        saved = self.store.canaries.save(
            canary, CanaryEvent.of("started", canary), expect=None if existing is None else existing.updated_at
        )
        if saved is None:
            raise CanaryRefused(f"deploy canary: a canary of {model} was started meanwhile; see shipml deploy status")
        log.info("canary_started", model=model, candidate=info.version, steps=list(steps), interval_s=interval_s)
        return saved, True

    def tick(self, model: str, now: float | None = None) -> Tick:
        """One check of the canary of ``model`` by this process, if it holds (or can take) the lease."""
        state = self.read(model)
        if state is None or state.ended:
            return Tick(state, (), False, None)
        lease = LEASE.format(model=model)
        if not self.store.leases.acquire(lease, self.holder, self.lease_s):
            return Tick(state, (), False, self.store.leases.holder(lease))
        self._leases.add(lease)
        if state.status == "promoting":  # decided by a controller that died before it was done
            return self._promote(state, ())
        now = time.time() if now is None else now
        change = check(state, self.evidence(state, now), now)
        logged = change.logged()
        if logged is None:
            return Tick(state, (), True, self.holder)
        saved = self.store.canaries.save(change.state, logged, expect=state.updated_at)
        if saved is None:  # written since it was read (an abort): that write stands
            return Tick(self.read(model), (), True, self.holder)
        self._log(state.model, logged)
        if change.promote:
            return self._promote(saved, (logged.event,))
        return Tick(saved, (logged.event,), True, self.holder)

    def abort(self, model: str, reason: str = "aborted by hand") -> Canary:
        """Stop the active canary of ``model`` (weight 0, aliases untouched), unless it changed since it was read
        into something that cannot be aborted (decided, promoted, rolled back)."""
        for _ in range(ABORT_TRIES):
            state = self.read(model)
            if state is None or not state.active:
                raise CanaryRefused(_not_abortable(model, state))
            change = abort(state, time.time(), reason)
            logged = change.logged()
            saved = self.store.canaries.save(change.state, logged, expect=state.updated_at)
            if saved is not None and logged is not None:
                self._log(state.model, logged)
                return saved
        raise CanaryRefused(f"deploy abort: the canary of {model} kept changing while it was aborted; try again")

    def _promote(self, state: Canary, events: tuple[Event, ...]) -> Tick:
        """Move the alias of a ``promoting`` canary (already production is done, not an error), then write it
        promoted; a registry failure leaves it promoting, for the next tick."""
        try:
            promote(self.registry, state.model, state.candidate, "production",
                    "canary: every step up to 100 % held its guardrails")  # fmt: skip
        except RegistryError as exc:
            log.error("canary_promote_failed", model=state.model, candidate=state.candidate, error=exc.message)
            return Tick(state, events, True, self.holder)
        change = promoted(state, time.time())
        logged = change.logged()
        saved = self.store.canaries.save(change.state, logged, expect=state.updated_at)
        if saved is None or logged is None:  # another controller finished it meanwhile
            return Tick(self.read(state.model), events, True, self.holder)
        self._log(state.model, logged)
        return Tick(saved, (*events, logged.event), True, self.holder)

    def _log(self, model: str, event: CanaryEvent) -> None:
        log.info(f"canary_{event.event}", model=model, candidate=event.candidate, percent=event.percent,
                 reason=event.reason)  # fmt: skip

    def evidence(self, state: Canary, now: float) -> Evidence:
        """The candidate's guardrails and primary metric against the champion over the canary's life, and its
        requests in the current step."""
        _, reference = self.champion()
        weight = state.weight
        variants = [(state.champion, reference, max(1.0 - weight, 1e-9)), (CANARY_VARIANT, state.reference, weight)]
        job = ExperimentJob(self.settings, self.store, self.registry, variants=variants)
        report = job.report(state.model, Window(state.started_at, now + 1e-6))
        challenger = report.challengers[0]
        violations = [f"guardrail {g.name} crossed its boundary: candidate - champion in [{g.lower:+.4g}, "
                      f"{g.upper:+.4g}], margin {g.margin:g}" for g in challenger.guardrails if g.status == "violated"]  # fmt: skip
        undecided = [
            f"guardrail {g.name} in [{g.lower:+.4g}, {g.upper:+.4g}], not yet within margin {g.margin:g}"
            for g in challenger.guardrails
            if g.status == "undecided" and g.name in state.require
        ]
        primary = challenger.primary
        if primary.worse and min(primary.control.n, primary.treatment.n) >= self.settings.experiments.min_count:
            d = primary.difference
            violations.insert(0, f"{primary.metric} is significantly worse: [{d.lower:+.4g}, {d.upper:+.4g}]")
        step_requests = self.store.predictions.count(
            state.model, variant=CANARY_VARIANT, since=state.step_started_at, until=now + 1e-6, status=None
        )
        return Evidence(tuple(violations), step_requests, tuple(undecided))


def _not_abortable(model: str, state: Canary | None) -> str:
    if state is None:
        return f"deploy abort: {model} has no active canary (none was started)"
    if state.status == "promoting":
        return (
            f"deploy abort: the canary of {model} is being promoted (the decision was written before this abort); "
            f"to undo it once done: shipml models rollback {model}"
        )
    return f"deploy abort: {model} has no active canary (version {state.candidate} {state.status.replace('_', ' ')})"
