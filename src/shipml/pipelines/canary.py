"""`shipml deploy canary`: the controller that raises a candidate version's traffic step by step, judged against the
champion from the prediction store, and rolls it back or promotes it through the registry.

The canary's state is a row of the store (``core.canary.Canary`` as JSON): every replica of the service reads it on
its poll and serves the candidate as the variant ``canary`` with the current weight (server/canary.py), so a replica
that restarts, or a new one, follows at once. The controller (``tick``) is safe to run from several processes: each
check takes the store's lease ``canary:<model>``, and a step is written only if nobody wrote the canary since it was
read (compare-and-set on ``updated_at``).

Evidence at each check (``ExperimentJob`` with the champion and the candidate as its two variants, over the canary's
whole life, since the anytime-valid intervals stay valid however often they are looked at): the candidate's
guardrails against the champion (error rate, and whatever else ``ab report`` judges) and its primary metric when
feedback has matured. A guardrail whose interval lies wholly beyond its margin, or a primary metric significantly
worse, rolls the canary back. The sample ratio check of ``ab report`` is not used: the weights change at each step,
so the units of the whole canary are not expected to follow any one of them.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import dataclass, replace

import structlog

from shipml.adapters.registry import MlflowRegistry, ModelRef
from shipml.adapters.store import PredictionStore
from shipml.config import Settings
from shipml.core.canary import Canary, CanaryEvent, Evidence, abort, check
from shipml.core.experiments import ERROR_RATE
from shipml.core.prediction import CANARY_VARIANT, DEFAULT_VARIANT
from shipml.core.window import Window
from shipml.errors import CanaryRefused, ConfigError, RegistryError
from shipml.pipelines.experiments import ExperimentJob
from shipml.pipelines.promote import promote

log = structlog.get_logger("shipml.canary")
LEASE = "canary:{model}"


@dataclass(frozen=True)
class Tick:
    """What one check saw and did: the canary after it (None: no canary), the event logged (None: none), and whether
    this process held the lease (False: another controller drives it; the state is only read)."""

    canary: Canary | None
    event: str | None
    driving: bool


class CanaryController:
    """Starts, checks, aborts and reads the canary of a model; see the module's docstring."""

    def __init__(self, settings: Settings, store: PredictionStore, registry: MlflowRegistry) -> None:
        self.settings = settings
        self.store = store
        self.registry = registry
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    def champion(self) -> tuple[str, str]:
        """(variant name, registry reference) of the served champion: the first of serve.variants, else serve.model."""
        serve = self.settings.serve
        if serve.variants:
            return serve.variants[0].name, serve.variants[0].model
        return DEFAULT_VARIANT, self.settings.serve_ref()

    def read(self, model: str) -> Canary | None:
        found = self.store.canaries.read(model)
        if not found:
            return None
        _, updated_at, state = found[0]
        return _with_time(Canary.from_json(state), updated_at)

    def start(
        self,
        model: str,
        version: str,
        steps: tuple[float, ...],
        interval_s: float,
        min_requests: int,
        require: tuple[str, ...] = (ERROR_RATE,),
    ) -> tuple[Canary, bool]:
        """Begin a canary of ``model`` version ``version`` (or resume the active one of that same version); the
        canary and whether it was started now."""
        name, reference = self.champion()
        champion_model = ModelRef.parse(reference).name
        if champion_model != model:
            raise ConfigError([f"deploy canary: the service serves {champion_model!r} (serve), not {model!r}"])
        info = self.registry.resolve(ModelRef.parse(f"{model}/{version}"))  # unknown version: one line, nothing written
        existing = self.read(model)
        if existing is not None and existing.active:
            if existing.candidate == info.version:
                return existing, False
            raise CanaryRefused(
                f"deploy canary: a canary of {model} is active (version {existing.candidate}, {existing.percent:g} %); "
                f"abort it first: shipml deploy abort {model}"
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
        self.store.canaries.save(model, canary.to_json(), CanaryEvent.of("started", canary).to_json())
        log.info("canary_started", model=model, candidate=info.version, steps=list(steps), interval_s=interval_s)
        return self.read(model) or canary, True

    def tick(self, model: str, now: float | None = None) -> Tick:
        """One check of the canary of ``model`` by this process, if it can take the lease."""
        state = self.read(model)
        if state is None or not state.active:
            return Tick(state, None, False)
        ttl = max(30.0, state.interval_s)
        if not self.store.leases.acquire(LEASE.format(model=model), self.holder, ttl):
            return Tick(state, None, False)
        now = time.time() if now is None else now
        change = check(state, self.evidence(state, now), now)
        logged = change.logged()
        if logged is None:
            return Tick(state, None, True)
        if change.promote:
            try:  # already production (a retry after a crash between the two writes) is done, not an error
                promote(self.registry, model, state.candidate, "production",
                        "canary: every step up to 100 % held its guardrails")  # fmt: skip
            except RegistryError as exc:
                log.error("canary_promote_failed", model=model, candidate=state.candidate, error=exc.message)
                return Tick(state, None, True)
        if not self.store.canaries.save(model, change.state.to_json(), logged.to_json(), expect=state.updated_at):
            return Tick(self.read(model), None, True)  # written by someone else since it was read
        log.info(f"canary_{change.event}", model=model, candidate=state.candidate, percent=change.state.percent,
                 reason=change.state.reason)  # fmt: skip
        return Tick(self.read(model), change.event, True)

    def abort(self, model: str, reason: str = "aborted by hand") -> Canary:
        state = self.read(model)
        if state is None or not state.active:
            raise CanaryRefused(f"deploy abort: {model} has no active canary")
        change = abort(state, time.time(), reason)
        logged = change.logged()
        self.store.canaries.save(model, change.state.to_json(), logged.to_json() if logged else None)
        log.info("canary_aborted", model=model, candidate=state.candidate, reason=reason)
        return self.read(model) or change.state

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


def _with_time(canary: Canary, updated_at: float) -> Canary:
    """The state with the store's ``updated_at`` (the compare-and-set token)."""
    return replace(canary, updated_at=updated_at)
