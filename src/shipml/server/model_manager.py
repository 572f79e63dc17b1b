"""ModelManager: holds one immutable Deployment (its variants, the split and the shadows) and swaps it whole.

Each variant follows its own registry reference through a ``VariantManager``: a reload builds the new
Variant beside the old one (download, integrity check, unpickle, warm-up) in a worker thread, then the
manager builds a new Deployment and replaces one reference. Requests take the reference once, so in-flight
requests finish on the versions they started with. A version that fails to load leaves the old one serving.
A single ``serve.model`` is the simple case: one variant, ``main``, no split.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import anyio.to_thread
import structlog

from shipml.adapters.native import KernelLoader
from shipml.adapters.registry import MlflowRegistry, ModelRef
from shipml.adapters.store import PredictionStore
from shipml.config import ServeSettings
from shipml.core.prediction import DEFAULT_VARIANT, Role, Served
from shipml.core.records import RecordValidator
from shipml.core.routing import Assignment, Shadow, Split, shadows_from
from shipml.core.schema import FeatureSchema
from shipml.errors import SchemaChangeError, ShipmlError, StoreError
from shipml.pipelines.bundle import ModelBundle, load_bundle, warm
from shipml.server.batcher import MicroBatcher
from shipml.server.metrics import ServerMetrics
from shipml.server.periodic import Periodic

log = structlog.get_logger("shipml.server")

# A worker whose first load failed only because the prediction store could not register the version (the store
# down at start-up) tries again this often, not after the registry's back-off: it is not ready until it loads.
STORE_RETRY_S = 2.0


@dataclass(frozen=True)
class Variant:
    """One model serving in the deployment: a bundle, its compiled validator, its variant name and role."""

    bundle: ModelBundle
    validator: RecordValidator
    variant: str = DEFAULT_VARIANT
    schema_sha256: str = ""  # the schema its rows are logged under (the store's catalog of typed slots)
    loaded_at: float = field(default_factory=time.time)
    batcher: MicroBatcher | None = None  # groups concurrent requests (models without a fast path, by default)

    role: Role = Role.PRIMARY  # primary (answers its share of requests) or shadow (scores copies, answers nobody)

    @property
    def name(self) -> str:
        return self.bundle.info.name

    @property
    def version(self) -> str:
        return self.bundle.info.version

    @cached_property
    def served(self) -> Served:
        """Who its predictions say answered them (built once per loaded variant)."""
        classes = tuple(str(c) for c in self.bundle.classes)
        return Served(self.name, self.version, self.variant, Role(self.role), self.schema_sha256, classes)


@dataclass(frozen=True)
class Deployment:
    """What serves requests right now: the primary variants in split order (one, ``main``, without an
    experiment), the split that routes keys to them, and the shadows with their sampling."""

    variants: tuple[Variant, ...]
    split: Split | None = None
    shadows: tuple[tuple[Variant, Shadow], ...] = ()
    salt: str = ""

    @property
    def primary(self) -> Variant:
        """The first variant (the only one without an experiment): what describes the service to protocols."""
        return self.variants[0]

    @property
    def weights(self) -> tuple[float, ...]:
        """Each variant's routing weight, in the order of ``variants`` (0 for one the split leaves out: the champion
        while a canary serves 100 %)."""
        if self.split is None:
            return (1.0,) + (0.0,) * (len(self.variants) - 1)
        share = dict(zip(self.split.names, self.split.weights, strict=True))
        return tuple(share.get(v.variant, 0.0) for v in self.variants)

    def route(self, key: str | None, rng: random.Random) -> tuple[Variant, Assignment | None]:
        """The variant that answers a request with routing ``key`` (None: a random draw), and how it was chosen
        (None without an experiment)."""
        if self.split is None:
            return self.variants[0], None
        assignment = self.split.assign(key, rng)
        return self._by_name[assignment.variant], assignment

    @cached_property
    def _by_name(self) -> dict[str, Variant]:
        return {v.variant: v for v in self.variants}


@dataclass(frozen=True)
class ReloadResult:
    changed: bool
    version: str | None
    previous: str | None
    error: str | None = None


class VariantManager:
    """Loads the version behind one variant's registry reference and keeps it current."""

    def __init__(
        self,
        ref: ModelRef,
        registry: MlflowRegistry,
        settings: ServeSettings,
        cache_dir: Path,
        metrics: ServerMetrics,
        store: PredictionStore | None = None,
        kernels: KernelLoader | None = None,
        *,
        store_histograms: bool = True,
        variant: str = DEFAULT_VARIANT,
        role: Role = Role.PRIMARY,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.ref = ref
        self.variant = variant
        self.role = role
        self.on_change = on_change
        self.registry = registry
        self.settings = settings
        self.cache_dir = cache_dir
        self.metrics = metrics
        self.store = store
        self.store_histograms = store_histograms  # count what is served on each version's profile (the store's)
        self.kernels = kernels
        self.current: Variant | None = None
        # what the registry asked for at the last check, when that check succeeded, and the last failure:
        # GET /model shows them, so "desired != serving" after a failed load is visible (Triton's semantics)
        self.desired_version: str | None = None
        self.last_check: float | None = None
        self.last_error: str | None = None
        self._failures = 0  # consecutive failed loads, for the poll's back-off
        self._rng = random.Random()  # noqa: S311 - the poll's jitter, no secret; seeded from the OS in each worker
        self.last_failure: float | None = None  # when the last check or load failed (GET /model)
        self._lock = asyncio.Lock()
        self._store_down = False  # the last load failed in the store, not the registry or the model
        self._poller = Periodic("registry-poll", self.reload, self._next_poll_s, wait_first=True)

    @property
    def ready(self) -> bool:
        return self.current is not None

    async def start(self) -> None:
        await self.reload()
        if self.settings.reload_interval_s > 0:
            self._poller.start()

    async def stop(self) -> None:
        await self._poller.stop()

    def _next_poll_s(self) -> float:
        """The poll interval, doubled after each failed load up to ``reload_backoff_max_s`` (a registry that is
        down, or a broken version behind the alias, is not hammered: each try downloads and hashes), times a
        random factor within ``reload_jitter``: replicas and workers started together spread their polls instead
        of asking a shared registry all at once."""
        interval = self.settings.reload_interval_s
        if self._store_down and self.current is None:
            interval = min(interval, STORE_RETRY_S)
        elif self._failures:
            interval = max(interval, min(interval * 2.0**self._failures, self.settings.reload_backoff_max_s))
        jitter = self.settings.reload_jitter
        return interval * self._rng.uniform(1.0 - jitter, 1.0 + jitter)

    async def reload(self, force: bool = False) -> ReloadResult:
        """Load the version the reference points at now, if it is not the one serving (or ``force``)."""
        async with self._lock:
            old = self.current
            old_version = old.version if old else None
            try:
                info = await anyio.to_thread.run_sync(self.registry.resolve, self.ref)
                self.desired_version, self.last_check = info.version, time.time()
                if old is not None and info.version == old.version and not force:
                    self._failures = 0
                    return ReloadResult(False, old_version, old_version)
                started = time.perf_counter()
                deployment = await anyio.to_thread.run_sync(self._build, ModelRef(info.name, info.version))
            except StoreError as exc:
                return self._failed(exc.message, "store", old_version, store=True)
            except ShipmlError as exc:
                return self._failed(exc.message, getattr(exc, "reason", "load"), old_version)
            except Exception as exc:  # noqa: BLE001 - whatever a model raises while loading, the old one serves
                return self._failed(f"{type(exc).__name__}: {exc}", "load", old_version)
            self.last_error, self._failures, self._store_down = None, 0, False
            self.current = deployment  # the swap: one reference
            if self.on_change is not None:
                self.on_change()
            if old is not None:
                self.metrics.model_info.labels(old.name, old.version, old.variant).set(0)
            self.metrics.model_info.labels(deployment.name, deployment.version, deployment.variant).set(1)
            log.info(
                "model_loaded",
                model=deployment.name,
                version=deployment.version,
                previous=old_version,
                seconds=round(time.perf_counter() - started, 3),
                predictor=deployment.bundle.predictor.name,
                reason=deployment.bundle.predictor_reason,
            )
            return ReloadResult(True, deployment.version, old_version)

    def _build(self, ref: ModelRef) -> Variant:
        bundle = load_bundle(
            self.registry, ref, self.cache_dir, fast_path=self.settings.fast_path, kernels=self.kernels
        )
        serving = self.current
        if serving is not None and not self.settings.allow_breaking_schema:
            check_compatible(serving.bundle.schema, bundle.schema, f"{ref.name}/{ref.version}", serving.version)
        warm(bundle)
        # the store's catalog maps this schema's features to typed slots (no DDL at model load)
        schema_sha256 = (
            self.store.predictions.register_schema(bundle.schema).schema_sha256
            if self.store is not None
            else bundle.schema.sha256()
        )
        if self.store is not None and self.store_histograms and bundle.profile is not None:
            positive = bundle.evaluation.get("positive_class")
            self.store.histograms.register_profile(ref.name, bundle.info.version, bundle.profile, bundle.schema.target.task,
                                        None if positive is None else str(positive))  # fmt: skip
        validator = RecordValidator(
            bundle.schema,
            unknown_categories=self.settings.unknown_categories,
            out_of_range=self.settings.out_of_range,
        )
        b = self.settings.batching
        batcher = None
        if b.enabled and (bundle.predictor.batching_pays or b.fast_path):
            batcher = MicroBatcher(bundle.predictor, b.max_batch_size, b.max_wait_ms)
        return Variant(bundle, validator, self.variant, schema_sha256, batcher=batcher, role=self.role)

    def _failed(self, message: str, reason: str, old_version: str | None, *, store: bool = False) -> ReloadResult:
        self.metrics.load_failures.labels(self.ref.name, reason).inc()
        self.last_error, self.last_failure = message, time.time()
        self._store_down = store
        if not store:  # the registry's back-off: a store that is down says nothing of the registry
            self._failures += 1
        log.error(
            "model_load_failed",
            model=self.ref.name,
            reference=str(self.ref),
            reason=reason,
            error=message,
            serving=old_version,
        )
        return ReloadResult(False, old_version, old_version, message)


class ModelManager:
    """The deployment: a VariantManager per variant (one, ``main``, for a single ``serve.model``) and per shadow;
    a new Deployment each time one of them swaps its version, ready once every primary variant is loaded."""

    def __init__(
        self,
        ref: ModelRef,
        registry: MlflowRegistry,
        settings: ServeSettings,
        cache_dir: Path,
        metrics: ServerMetrics,
        store: PredictionStore | None = None,
        kernels: KernelLoader | None = None,
        *,
        store_histograms: bool = True,
    ) -> None:
        self.settings = settings
        self.current: Deployment | None = None

        def member(ref: ModelRef, variant: str, role: Role) -> VariantManager:
            return VariantManager(
                ref, registry, settings, cache_dir, metrics, store, kernels,
                store_histograms=store_histograms, variant=variant, role=role, on_change=self._rebuild,
            )  # fmt: skip

        if settings.variants:
            self.members = [member(ModelRef.parse(v.model), v.name, Role.PRIMARY) for v in settings.variants]
            self.split: Split | None = Split([(v.name, v.weight) for v in settings.variants], settings.routing_salt)
        else:
            self.members = [member(ref, DEFAULT_VARIANT, Role.PRIMARY)]
            self.split = None
        self.shadow_members = [member(ModelRef.parse(sh.model), sh.name, Role.SHADOW) for sh in settings.shadow]
        self.shadows = shadows_from([(sh.name, sh.fraction) for sh in settings.shadow])
        self._member = member
        # a canary (server/canary.py follows the store's): its member, and its weight while it serves
        self.canary: VariantManager | None = None
        self.canary_weight = 0.0  # its share of the champion's traffic
        self.canary_salt = ""  # its own hash domain

    @property
    def ref(self) -> ModelRef:
        """The first variant's reference (what a single-model service serves)."""
        return self.members[0].ref

    @property
    def ready(self) -> bool:
        return self.current is not None

    @property
    def desired_version(self) -> str | None:
        return self.members[0].desired_version

    @property
    def last_check(self) -> float | None:
        return self.members[0].last_check

    @property
    def last_error(self) -> str | None:
        return self.members[0].last_error

    @property
    def last_failure(self) -> float | None:
        return self.members[0].last_failure

    def _rebuild(self) -> None:
        """A member swapped its version, or the canary changed: the new Deployment, once every primary variant has
        one. A loaded canary takes its weight of the champion's traffic (``Split.with_canary``): the other variants
        keep their keys and shares, and a champion left with no share stays in the deployment, out of the split."""
        primaries = [m.current for m in self.members]
        if any(v is None for v in primaries):
            return
        variants = tuple(v for v in primaries if v is not None)
        shadows = tuple(
            (m.current, sh) for m, sh in zip(self.shadow_members, self.shadows, strict=True) if m.current is not None
        )
        split = self.split
        canary = self.canary.current if self.canary is not None else None
        salt = self.settings.routing_salt
        if canary is not None and self.canary_weight > 0:
            base = self.split if self.split is not None else Split([(variants[0].variant, 1.0)], salt)
            split = base.with_canary(canary.variant, self.canary_weight, self.canary_salt)
            variants = (*variants, canary)
        self.current = Deployment(variants, split, shadows, salt)

    async def set_canary(self, ref: ModelRef | None, weight: float, variant: str, salt: str = "") -> None:
        """Serve ``ref`` as ``variant`` with ``weight`` of the champion's traffic, its keys chosen in the hash domain
        of ``salt`` (loading it first; the deployment changes only once it is loaded), or stop serving the canary
        (``ref`` None, or weight 0)."""
        if ref is None or weight <= 0:
            if self.canary is not None:
                stopped, self.canary, self.canary_weight = self.canary, None, 0.0
                self._rebuild()
                await stopped.stop()
            return
        if self.canary is not None and self.canary.ref != ref:
            await self.set_canary(None, 0.0, variant)
        self.canary_salt = salt
        if self.canary is None:
            self.canary = self._member(ref, variant, Role.PRIMARY)
            self.canary_weight = min(weight, 1.0)
            await self.canary.start()  # a version that fails to load leaves the deployment as it was
        elif weight != self.canary_weight:
            self.canary_weight = min(weight, 1.0)
        self._rebuild()

    async def start(self) -> None:
        for m in (*self.members, *self.shadow_members):
            await m.start()

    async def stop(self) -> None:
        for m in (*self.members, *self.shadow_members, *([self.canary] if self.canary is not None else [])):
            await m.stop()

    async def reload(self, force: bool = False) -> ReloadResult:
        """Reload every variant and shadow; the first variant's result (the one a single-model service has)."""
        results = [await m.reload(force) for m in (*self.members, *self.shadow_members)]
        return results[0]


def check_compatible(serving: FeatureSchema, candidate: FeatureSchema, what: str, serving_version: str) -> None:
    """Refuse a hot reload whose schema would fail the requests of today's clients: a required feature they
    do not send, or a feature they send that it would refuse as unknown (serve.allow_breaking_schema)."""
    old = {f.name for f in serving.features}
    new_required = sorted(f.name for f in candidate.features if not f.nullable and f.name not in old)
    dropped = sorted(old - {f.name for f in candidate.features})
    problems = []
    if new_required:
        problems.append(
            f"requires feature(s) {', '.join(new_required)} that clients of version {serving_version} do not send"
        )
    if dropped:
        problems.append(f"drops feature(s) {', '.join(dropped)} that clients of version {serving_version} send")
    if problems:
        raise SchemaChangeError(
            f"{what}: its schema {' and '.join(problems)}; version {serving_version} keeps serving "
            "(restart the service, or set serve.allow_breaking_schema: true, to switch anyway)"
        )
