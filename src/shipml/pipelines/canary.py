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

Evidence at each check (``ExperimentJob`` with the champion and the candidate as its two variants, weighted as the
step weights them, over the current step's window only, ``core.canary.step_window``): the candidate's guardrails
against the champion (error rate, and whatever else ``ab report`` judges), its primary metric when feedback has
matured, and the step's sample ratio (the units of each version against the step's weight). Each step's tests run
at ``alpha / judged steps`` (``core.canary.step_alpha``). A guardrail whose interval lies wholly beyond its margin,
a primary metric significantly worse, or a sample ratio mismatch rolls the canary back. Evidence is never pooled
across steps: the weights differ, so rows of the early steps are mostly the champion's and of the late ones mostly
the candidate's, and anything that changes over time would be blamed on the candidate.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import structlog

from shipml.adapters.registry import MlflowRegistry, ModelRef
from shipml.adapters.store import PredictionStore
from shipml.adapters.store.leases import new_holder
from shipml.config import Settings
from shipml.core.canary import (
    Canary,
    CanaryEvent,
    Event,
    Evidence,
    abort,
    check,
    evidence_of,
    promoted,
    step_alpha,
    step_window,
)
from shipml.core.experiments import ERROR_RATE
from shipml.core.prediction import CANARY_VARIANT, DEFAULT_VARIANT
from shipml.core.routing import derived_salt
from shipml.errors import CanaryRefused, ConfigError, RegistryError
from shipml.pipelines.experiments import ExperimentJob
from shipml.pipelines.promote import promote

log = structlog.get_logger("shipml.canary")
LEASE = "canary:{model}"
LEASE_CHECKS = 3  # the lease lasts this many checks: a controller that died stops blocking the others soon
LEASE_MIN_S = 5.0  # and at least this long, so that computing the evidence does not outlast it
ABORT_TRIES = 5  # an abort re-reads and tries again when a tick wrote the canary meanwhile
SERVED_RESOLUTION_S = 0.05  # how precisely a step's first request to the candidate is found


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
        self._served: dict[tuple[str, str, float], float] = {}  # (model, candidate, step start): first request

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
        min_requests: int | None = None,
        require: tuple[str, ...] = (ERROR_RATE,),
        salt: str | None = None,
    ) -> tuple[Canary, bool]:
        """Begin a canary of ``model`` version ``version`` (or resume the one of that same version that has not
        ended); the canary and whether it was started now. ``min_requests``: what the candidate answers in a step
        before it goes on (None: per step, what the latency guardrail needs to decide, ``Canary.needed``). ``salt``: its routing salt (default: derived from the
        model and the version, its own)."""
        if salt is not None and "\0" in salt:
            raise ConfigError(["--salt: must not contain the NUL character (it separates the salt from the key)"])
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
        own = derived_salt("canary", model, info.version) if salt is None else salt
        canary = Canary(model, info.version, name, steps, interval_s, min_requests, now, now, updated_at=now,
                        reason=f"started at {steps[0]:g} %", require=require, salt=own)  # fmt: skip
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
        change = check(state, self.evidence(state, now), now, self.settings.experiments.alpha)
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
        """The candidate's guardrails, primary metric and sample ratio against the champion over the current step's
        window, and its requests there."""
        _, reference = self.champion()
        weight = state.weight
        variants = [(state.champion, reference, max(1.0 - weight, 1e-9)), (CANARY_VARIANT, state.reference, weight)]
        experiments = self.settings.experiments
        judged = experiments.model_copy(update={"alpha": step_alpha(state, experiments.alpha)})
        settings = self.settings.model_copy(update={"experiments": judged})
        lag = self.settings.store.timeout_s
        window = step_window(state, now, experiments.canary_settle_s, self._served_since(state, now), lag)
        job = ExperimentJob(settings, self.store, self.registry, variants=variants)
        report = job.report(state.model, window)
        step_requests = self.store.predictions.count(
            state.model, variant=CANARY_VARIANT, since=window.since, until=window.until, status=None
        )
        return evidence_of(report.challengers[0], step_requests, state.require, experiments.min_count)

    def _served_since(self, state: Canary, now: float) -> float | None:
        """When the candidate answered its first request (any status) in the current step, to ``SERVED_RESOLUTION_S``
        (None: not yet), found by halving the step's time with counts and kept once found."""
        key = (state.model, state.candidate, state.step_started_at)
        if key in self._served:
            return self._served[key]

        def any_in(since: float, until: float) -> bool:
            counted = self.store.predictions.count(
                state.model, variant=CANARY_VARIANT, since=since, until=until, status=None
            )
            return counted > 0

        low, high = state.step_started_at, now + 1e-6
        if not any_in(low, high):
            return None
        while high - low > SERVED_RESOLUTION_S:
            middle = (low + high) / 2.0
            low, high = (low, middle) if any_in(low, middle) else (middle, high)
        self._served = {key: low}  # only the current step's is ever needed again
        return low


def _not_abortable(model: str, state: Canary | None) -> str:
    if state is None:
        return f"deploy abort: {model} has no active canary (none was started)"
    if state.status == "promoting":
        return (
            f"deploy abort: the canary of {model} is being promoted (the decision was written before this abort); "
            f"to undo it once done: shipml models rollback {model}"
        )
    return f"deploy abort: {model} has no active canary (version {state.candidate} {state.status.replace('_', ' ')})"
