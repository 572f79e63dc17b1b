"""The sections of the prediction service: the service itself (``serve``, with its experiment's variants and
shadows), its API keys (``auth``) and the native kernel of the fast predictors (``native``)."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from shipml.config.section import Section
from shipml.core.prediction import CANARY_VARIANT
from shipml.core.records import Policy
from shipml.errors import ConfigError

KeyRole = Literal["predict", "admin"]  # what an API key may do


class RateLimitSettings(Section):
    """A token bucket: ``burst`` requests at once, refilled at ``requests_per_s`` (per worker process)."""

    requests_per_s: float = Field(gt=0, description="sustained requests per second, per worker process")
    burst: int = Field(default=1, ge=1, description="requests allowed at once above the sustained rate")


class ApiKeySettings(Section):
    """An API key, stored as the sha256 of the key (``shipml keys new`` makes both)."""

    name: str = Field(min_length=1, description="who holds the key; appears in logs instead of the key")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="hex sha256 of the key")
    roles: list[KeyRole] = Field(default_factory=lambda: list[KeyRole](["predict"]), min_length=1)
    rate_limit: RateLimitSettings | None = Field(
        default=None, description="requests of this key past the limit get 429 with Retry-After; none: unlimited"
    )


class AuthSettings(Section):
    """API-key authentication of the prediction service."""

    enabled: bool = Field(default=True, description="false disables auth entirely (loudly)")
    keys: list[ApiKeySettings] = Field(default_factory=list)
    failure_limit: RateLimitSettings = Field(
        default=RateLimitSettings(requests_per_s=5.0, burst=50),
        description="failed authentications per client address; past it the client gets 429 instead of 401",
    )


class BatchingSettings(Section):
    """Micro-batching: concurrent requests to one model grouped into one predictor call."""

    enabled: bool = Field(default=True, description="group requests to models served by their pipeline")
    max_batch_size: int = Field(default=64, ge=1, le=100_000, description="rows per grouped call")
    max_wait_ms: float = Field(default=2.0, ge=0.0, le=1000.0, description="how long the first request waits")
    fast_path: bool = Field(
        default=False, description="group requests to verified fast predictors too (measured by make bench)"
    )


VARIANT_NAME_MAX = 50  # the prediction store's variant columns (adapters/store/tables.py) hold this many characters
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _variant_name(name: str) -> str:
    """A name every row of the variant can be stored under, on every dialect (Postgres enforces the length and
    refuses NUL; a refused row fails every other row of its group commit)."""
    if len(name) > VARIANT_NAME_MAX or _CONTROL.search(name):
        raise ValueError(
            f"must be at most {VARIANT_NAME_MAX} characters, none of them a control character (the prediction "
            f"store's variant column), got {name!r}"
        )
    return name


class VariantSettings(Section):
    """One variant of an experiment: a registry reference and its share of the traffic."""

    name: str = Field(description="the variant's name (in answers, logs, metrics and the prediction store)")
    model: str = Field(description="registry reference it serves, e.g. churn@production or churn/7")
    weight: float = Field(description="its share of the routing buckets; the weights sum to 1")

    _name = field_validator("name")(_variant_name)


class ShadowSettings(Section):
    """A shadow variant: scores a fraction of the requests off the response path, answers nobody."""

    name: str = Field(description="the shadow's name (role shadow in the prediction store)")
    model: str = Field(description="registry reference it serves")
    fraction: float = Field(description="share of requests it also scores, in [0, 1]")

    _name = field_validator("name")(_variant_name)


class ServeSettings(Section):
    """The HTTP prediction service."""

    model: str | None = Field(
        default=None, description="registry reference to serve (default: <model.name>@production)"
    )
    host: str = Field(default="127.0.0.1", description="interface to listen on")
    port: int = Field(default=8000, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=64, description="uvicorn worker processes")
    max_batch: int = Field(default=10_000, ge=1, description="max records in one batch request")
    max_body_bytes: int = Field(default=8_000_000, ge=1024, description="max request body size")
    unknown_categories: Policy = Field(default="reject", description="policy for unseen categories")
    out_of_range: Policy = Field(default="reject", description="policy for values outside min/max")
    reload_interval_s: float = Field(
        default=30.0, ge=0.0, description="registry alias poll interval; 0 turns polling off"
    )
    reload_jitter: float = Field(
        default=0.2,
        ge=0.0,
        lt=1.0,
        description="each poll waits reload_interval_s times a random factor in [1 - jitter, 1 + jitter], so "
        "replicas started together do not all ask the registry at once",
    )
    reload_backoff_max_s: float = Field(
        default=30.0,
        gt=0.0,
        le=3600.0,
        description="after failed loads, polls back off (doubling from reload_interval_s) up to this many seconds",
    )
    allow_breaking_schema: bool = Field(
        default=False,
        description="hot-reload a version whose schema adds a required feature or drops one (its clients' "
        "requests would fail); false keeps the serving version and counts a load failure (reason schema)",
    )
    cors_origins: list[str] = Field(default_factory=list, description="allowed CORS origins; empty turns CORS off")
    cors_allow_credentials: bool = False
    allowed_hosts: list[str] | None = Field(
        default=None,
        description="Host header values accepted (without port; '*' accepts any). Default: the loopback names "
        "when host is a loopback address (a DNS-rebinding page cannot reach the service), any otherwise",
    )
    grace_period_s: float = Field(default=10.0, ge=0.0, description="time to finish in-flight requests on SIGTERM")
    drain_s: float = Field(
        default=0.0,
        ge=0.0,
        le=300.0,
        description="on SIGTERM, answer /health/ready 503 and keep serving this long before closing the port "
        "(a load balancer stops sending first; the Kubernetes preStop pattern)",
    )
    max_in_flight: int = Field(
        default=512,
        ge=1,
        le=1_000_000,
        description="requests one worker works on at once; more get a fast 503 with Retry-After (health and "
        "metrics are never refused)",
    )
    request_timeout_s: float = Field(
        default=30.0, gt=0.0, le=3600.0, description="a model call still running after this answers 504"
    )
    read_timeout_s: float = Field(
        default=10.0,
        gt=0.0,
        le=3600.0,
        description="a request whose headers and body have not all arrived after this is answered 408 and its "
        "connection closed (slow clients cannot hold connections)",
    )
    keep_alive_s: float = Field(
        default=5.0,
        gt=0.0,
        le=3600.0,
        description="an idle client connection is closed after this; behind a proxy that pools connections, "
        "make it longer than the proxy's idle timeout (haproxy's `timeout http-keep-alive`, a cloud load "
        "balancer's idle timeout, often 60 s: 75 there), so the proxy, not shipml, closes an idle connection",
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="addresses or networks (CIDR) of the proxies in front: from these peers the client's address "
        "is taken from X-Forwarded-For (its last address not itself a trusted proxy) for logs and the failed-auth "
        "limit; from any other peer the header is ignored. Empty: the peer is the client",
    )
    log_features: bool = Field(default=False, description="include feature values in request logs")
    multiproc_dir: str | None = Field(default=None, description="prometheus multiprocess directory (set by --workers)")
    fast_path: bool = Field(
        default=True, description="serve a verified fast predictor; false always serves the pipeline (comparisons)"
    )
    batching: BatchingSettings = Field(default_factory=BatchingSettings)
    variants: list[VariantSettings] = Field(
        default_factory=list,
        description="an experiment: several models in one service, split by a stable hash of serve.salt and the "
        "routing key (the record's id or X-Routing-Key); empty: serve.model alone",
    )
    shadow: list[ShadowSettings] = Field(
        default_factory=list, description="shadow variants, scoring a fraction of requests off the response path"
    )
    salt: str | None = Field(
        default=None,
        description="salt of the routing hash (change it to reshuffle every key); default: derived from the "
        "variants' names and models, so each experiment has its own",
    )
    shadow_timeout_s: float = Field(
        default=2.0, gt=0.0, le=60.0, description="a shadow's call still running after this is abandoned"
    )

    @property
    def routing_salt(self) -> str:
        """The experiment's salt: ``salt`` when given, else a digest of the variants' names and models (of the
        served model without variants), the same in every worker and replica."""
        if self.salt is not None:
            return self.salt
        from shipml.core.routing import derived_salt

        if self.variants:
            return derived_salt("variants", *(f"{v.name}={v.model}" for v in self.variants))
        return derived_salt("serve", self.model or "")

    @model_validator(mode="after")
    def _variants(self) -> ServeSettings:
        if not self.variants and not self.shadow:
            return self
        from shipml.core.routing import Split, shadows_from

        problems = []
        if self.variants and self.model:
            problems.append("serve.model and serve.variants: give one of them (variants name their own models)")
        if self.variants:
            try:
                Split([(v.name, v.weight) for v in self.variants], self.routing_salt)
            except ConfigError as exc:
                problems += exc.lines()
        try:
            shadows_from([(sh.name, sh.fraction) for sh in self.shadow])
        except ConfigError as exc:
            problems += exc.lines()
        reserved = "is reserved for the candidate of `shipml deploy canary`; choose another name"
        named = [("variants", i, v.name) for i, v in enumerate(self.variants)]
        named += [("shadow", i, sh.name) for i, sh in enumerate(self.shadow)]
        problems += [
            f"serve.{where}[{i}].name: {name!r} {reserved}" for where, i, name in named if name == CANARY_VARIANT
        ]
        names = {v.name: i for i, v in enumerate(self.variants)}
        problems += [
            f"serve.shadow[{i}].name: {sh.name!r} is also serve.variants[{names[sh.name]}]'s name"
            for i, sh in enumerate(self.shadow)
            if sh.name in names
        ]
        if problems:
            raise ConfigError(problems)
        return self

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, proxies: list[str]) -> list[str]:
        import ipaddress

        for i, proxy in enumerate(proxies):
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(
                    f"trusted_proxies[{i}]: {proxy!r} is not an address or a network (e.g. 10.0.0.5, 10.0.0.0/8)"
                ) from None
        return proxies

    @model_validator(mode="after")
    def _no_wildcard_with_credentials(self) -> ServeSettings:
        if self.cors_allow_credentials and "*" in self.cors_origins:
            raise ValueError("cors_origins: '*' cannot be combined with cors_allow_credentials")
        return self


class NativeSettings(Section):
    """The native tree kernel (``adapters/native.py``): compiled once per machine, else numpy serves."""

    enabled: bool = Field(default=True, description="use the native kernel where verified; false: numpy only")
    cache_dir: str | None = Field(
        default=None, description="where the compiled kernel is kept (default: ~/.cache/shipml/native)"
    )
    cc: str | None = Field(default=None, description="C compiler that builds the kernel (default: cc, else gcc)")

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, data: Any) -> Any:
        # SHIPML_NATIVE=0 (as documented before this section existed) or `native: false` in the
        # YAML: a bare flag stands for `enabled`. It reaches here through the settings' own
        # environment source (the field is NoDecode, so "off" is not parsed as JSON first).
        return {"enabled": data} if isinstance(data, bool | int | str) else data
