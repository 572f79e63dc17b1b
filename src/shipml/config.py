"""Settings: ``shipml.yaml`` parsed into typed models, with ``SHIPML_*`` overrides.

Precedence, highest first: ``SHIPML_REGISTRY_URI``, nested environment
variables (``SHIPML_TRAINING__CV_FOLDS=3``), the YAML file, the defaults.
Every problem is reported with its key path, one line each.
"""

from __future__ import annotations

import difflib
import os
import re
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from shipml.core.prediction import CANARY_VARIANT
from shipml.core.records import Policy
from shipml.core.schema import FeatureKind, Task
from shipml.core.window import duration_problem
from shipml.errors import ConfigError

DEFAULT_CONFIG = "shipml.yaml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSettings(_Section):
    """What to train and under which registered name."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$", description="registered model name")
    task: Task = Field(description="binary, multiclass or regression")
    estimator: str = Field(
        default="sklearn.ensemble.RandomForestClassifier",
        description="import path of an sklearn-compatible estimator class",
    )
    params: dict[str, Any] = Field(default_factory=dict, description="estimator parameters")


class FeatureSettings(_Section):
    """One feature of the schema, as written in the config or a schema file."""

    name: str = Field(min_length=1)
    kind: FeatureKind
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    categories: list[str] | None = None


class DataSettings(_Section):
    """Where the training data is and how to read it."""

    path: str | None = Field(default=None, description="training data file (CSV or Parquet)")
    target: str = Field(min_length=1, description="the column to predict")
    id_columns: list[str] = Field(default_factory=list, description="columns kept in outputs, never used as features")
    drop_columns: list[str] = Field(default_factory=list, description="columns ignored entirely")
    schema_file: str | None = Field(default=None, description="YAML schema written by `shipml schema infer`")
    features: list[FeatureSettings] | None = Field(default=None, description="inline feature schema")


class ValidationSettings(_Section):
    """Thresholds of the data quality checks."""

    max_null_rate: float = Field(default=0.2, ge=0.0, le=1.0, description="max fraction of nulls per column")
    max_duplicate_rate: float = Field(default=0.05, ge=0.0, le=1.0, description="max fraction of duplicate rows")
    min_class_rate: float = Field(default=0.01, ge=0.0, le=0.5, description="min fraction of the rarest class")
    allow_constant_columns: bool = Field(default=False, description="accept columns with a single value")


class GateSettings(_Section):
    """A promotion gate on one holdout metric."""

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> GateSettings:
        if self.min is None and self.max is None:
            raise ValueError("needs `min` or `max`")
        return self


class TrainingSettings(_Section):
    """Split, cross-validation and promotion gates."""

    test_size: float = Field(default=0.2, gt=0.0, lt=1.0, description="holdout fraction")
    cv_folds: int = Field(default=5, ge=2, le=50, description="k of the k-fold cross-validation")
    seed: int = Field(default=42, ge=0, description="seed of every random choice")
    gates: dict[str, GateSettings] = Field(default_factory=dict, description="metric -> {min|max}")
    positive_class: str | None = Field(
        default=None,
        description="binary tasks: the label precision, recall, f1 and their gates measure (as text, e.g. "
        "'churned'); default: the label 1, true or yes when there is one, else the rarer label",
    )


class RegistrySettings(_Section):
    """The MLflow tracking server / registry."""

    uri: str = Field(default="sqlite:///.shipml/mlflow.db", description="MLflow tracking + registry URI")
    artifact_root: str = Field(default=".shipml/artifacts", description="artifact root of the embedded store")
    experiment: str = Field(default="shipml", min_length=1, description="MLflow experiment name")


class PredictSettings(_Section):
    """Offline scoring."""

    chunk_rows: int = Field(default=50_000, ge=1, description="rows read, validated and scored at a time")


Role = Literal["predict", "admin"]


class RateLimitSettings(_Section):
    """A token bucket: ``burst`` requests at once, refilled at ``requests_per_s`` (per worker process)."""

    requests_per_s: float = Field(gt=0, description="sustained requests per second, per worker process")
    burst: int = Field(default=1, ge=1, description="requests allowed at once above the sustained rate")


class ApiKeySettings(_Section):
    """An API key, stored as the sha256 of the key (``shipml keys new`` makes both)."""

    name: str = Field(min_length=1, description="who holds the key; appears in logs instead of the key")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="hex sha256 of the key")
    roles: list[Role] = Field(default_factory=lambda: list[Role](["predict"]), min_length=1)
    rate_limit: RateLimitSettings | None = Field(
        default=None, description="requests of this key past the limit get 429 with Retry-After; none: unlimited"
    )


class AuthSettings(_Section):
    """API-key authentication of the prediction service."""

    enabled: bool = Field(default=True, description="false disables auth entirely (loudly)")
    keys: list[ApiKeySettings] = Field(default_factory=list)
    failure_limit: RateLimitSettings = Field(
        default=RateLimitSettings(requests_per_s=5.0, burst=50),
        description="failed authentications per client address; past it the client gets 429 instead of 401",
    )


class BatchingSettings(_Section):
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


class VariantSettings(_Section):
    """One variant of an experiment: a registry reference and its share of the traffic."""

    name: str = Field(description="the variant's name (in answers, logs, metrics and the prediction store)")
    model: str = Field(description="registry reference it serves, e.g. churn@production or churn/7")
    weight: float = Field(description="its share of the routing buckets; the weights sum to 1")

    _name = field_validator("name")(_variant_name)


class ShadowSettings(_Section):
    """A shadow variant: scores a fraction of the requests off the response path, answers nobody."""

    name: str = Field(description="the shadow's name (role shadow in the prediction store)")
    model: str = Field(description="registry reference it serves")
    fraction: float = Field(description="share of requests it also scores, in [0, 1]")

    _name = field_validator("name")(_variant_name)


class ServeSettings(_Section):
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
    salt: str = Field(default="shipml", description="salt of the routing hash: change it to reshuffle every key")
    shadow_timeout_s: float = Field(
        default=2.0, gt=0.0, le=60.0, description="a shadow's call still running after this is abandoned"
    )

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
                Split([(v.name, v.weight) for v in self.variants], self.salt)
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

    @model_validator(mode="after")
    def _no_wildcard_with_credentials(self) -> ServeSettings:
        if self.cors_allow_credentials and "*" in self.cors_origins:
            raise ValueError("cors_origins: '*' cannot be combined with cors_allow_credentials")
        return self


class StoreSettings(_Section):
    """The prediction store (prediction log + feedback)."""

    uri: str = Field(
        default="sqlite:///.shipml/predictions.db", description="SQLAlchemy URI: sqlite:/// or postgresql://"
    )
    durability: Literal["commit", "async"] = Field(
        default="commit", description="commit: answer after the row is committed; async: queue and answer at once"
    )
    queue_size: int = Field(default=10_000, ge=1, description="async mode: rows waiting before the service sheds load")
    batch_max: int = Field(default=512, ge=1, description="max rows per group commit")
    commit_window_ms: float = Field(
        default=0.4, ge=0.0, le=100.0, description="commit mode: how long the writer gathers rows before a commit"
    )
    async_window_ms: float = Field(
        default=20.0, ge=0.0, le=1000.0, description="async mode: how long the writer gathers rows before a commit"
    )
    sqlite_synchronous: Literal["FULL", "NORMAL"] = Field(
        default="FULL", description="FULL survives an OS crash, NORMAL only a process crash"
    )
    histograms: bool = Field(
        default=True,
        description="keep per-minute histograms of what is served on each version's reference profile buckets, "
        "as rows are written (drift over a window reads these, not every row)",
    )
    histogram_flush_s: float = Field(
        default=5.0, gt=0.0, le=300.0, description="how often the writer writes the histograms' changed minutes"
    )
    feedback_wait_s: float = Field(
        default=2.0,
        ge=0.0,
        le=60.0,
        description="/feedback for a prediction made this recently waits for its row (another worker may not "
        "have committed it yet) before answering 404",
    )

    @field_validator("uri")
    @classmethod
    def _not_in_memory(cls, uri: str) -> str:
        # The writer opens its own connection, and each connection to an in-memory SQLite database
        # gets a new, empty one: every write would fail with "no such table".
        scheme, _, rest = uri.partition("://")
        database = rest.partition("/")[2]
        if scheme.split("+")[0] == "sqlite" and (database in ("", ":memory:") or "mode=memory" in database):
            raise ValueError(
                f"an in-memory SQLite database cannot hold the prediction log (each connection gets its own, "
                f"empty one), got {uri!r}; use a file, e.g. sqlite:///.shipml/predictions.db"
            )
        return uri


class NativeSettings(_Section):
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


class DriftSettings(_Section):
    """Thresholds of the drift statistics (core/drift.py says what each measures and which decide)."""

    psi_warn: float = Field(default=0.1, ge=0.0, description="population stability index: warn at or above")
    psi_drift: float = Field(default=0.2, ge=0.0, description="population stability index: drift at or above")
    js_warn: float = Field(default=0.13, ge=0.0, le=1.0, description="Jensen-Shannon distance (reported): warn")
    js_drift: float = Field(default=0.19, ge=0.0, le=1.0, description="Jensen-Shannon distance (reported): drift")
    chi2_alpha: float = Field(
        default=0.01, gt=0.0, lt=1.0, description="categoricals: chi-square p-value under which the TVD is judged"
    )
    tvd_warn: float = Field(default=0.05, ge=0.0, le=1.0, description="categoricals: total variation distance: warn")
    tvd_drift: float = Field(default=0.1, ge=0.0, le=1.0, description="categoricals: total variation distance: drift")
    domain_alpha: float = Field(
        default=0.05, gt=0.0, lt=1.0, description="domain classifier: permutation p-value under which AUC is judged"
    )
    domain_auc_warn: float = Field(default=0.53, ge=0.5, le=1.0, description="domain classifier AUC: warn")
    domain_auc_drift: float = Field(default=0.55, ge=0.5, le=1.0, description="domain classifier AUC: drift")
    min_rows: int = Field(
        default=200, ge=1, description="fewer rows than this in a window: the verdict is not_enough_data"
    )


class MonitorSettings(_Section):
    """The monitoring job (`shipml monitor drift`, and its schedule inside `shipml serve`)."""

    window: str = Field(default="24h", description="the window a run judges, ending now (e.g. 30m, 24h, 7d)")
    interval_s: float = Field(
        default=0.0, ge=0.0, description="shipml serve runs the job this often (one runner across workers); 0: never"
    )
    drift: DriftSettings = DriftSettings()
    multivariate: bool = Field(
        default=True, description="also run the domain classifier (a multivariate check) on a sample of the rows"
    )
    label_delay_s: float = Field(
        default=0.0, ge=0.0, description="predictions younger than this are not yet expected to have feedback"
    )
    performance_tolerance: float = Field(
        default=0.05, ge=0.0, description="flag a drop when a metric is worse than holdout by more than this"
    )
    min_labelled: int = Field(default=100, ge=1, description="labelled rows a realised metric needs to be judged")
    max_calibration_error: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="estimated performance is refused above this holdout calibration error",
    )
    webhook_url: str | None = Field(
        default=None, description="POST a JSON (Slack-compatible) message here when a verdict changes"
    )
    webhook_cooldown_s: float = Field(
        default=3600.0, ge=0.0, description="at most one message per model and verdict in this long"
    )

    @field_validator("window")
    @classmethod
    def _a_duration(cls, window: str) -> str:
        problem = duration_problem(window)
        if problem is not None:
            raise ValueError(problem)
        return window


class ExperimentSettings(_Section):
    """How `shipml ab report` judges an experiment (core/experiments.py says what each number does)."""

    min_count: int = Field(
        default=100, ge=1, description="labelled predictions each variant needs before a verdict other than continue"
    )
    error_rate_margin: float = Field(
        default=0.01,
        ge=0.0,
        le=1.0,
        description="a challenger's error rate may exceed the champion's by at most this (absolute) to ship",
    )
    latency_margin: float = Field(
        default=0.01,
        ge=0.0,
        le=1.0,
        description="a challenger may have at most this share of its requests over the champion's p99 latency "
        "beyond the champion's own 1 % (0.01: 2 %, i.e. its p98 no slower than the champion's p99) to ship",
    )
    expected_n: int = Field(
        default=10_000,
        ge=1,
        description="labelled predictions (all variants) the experiment plans for: the anytime-valid intervals "
        "are tightest there, and valid at every size",
    )
    mde: float = Field(
        default=0.02,
        gt=0.0,
        description="minimum detectable effect, relative to the champion's metric (0.02: 2 %), for the sample "
        "size still needed",
    )
    alpha: float = Field(default=0.05, gt=0.0, lt=1.0, description="1 - the confidence of every interval and test")


class Settings(BaseSettings):
    """The whole configuration."""

    model_config = SettingsConfigDict(
        env_prefix="SHIPML_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    home: str = Field(default=".shipml", description="state directory of the embedded defaults")
    model: ModelSettings | None = None
    data: DataSettings | None = None
    validation: ValidationSettings = ValidationSettings()
    training: TrainingSettings = TrainingSettings()
    registry: RegistrySettings = RegistrySettings()
    predict: PredictSettings = PredictSettings()
    serve: ServeSettings = ServeSettings()
    auth: AuthSettings = AuthSettings()
    store: StoreSettings = StoreSettings()
    monitor: MonitorSettings = MonitorSettings()
    experiments: ExperimentSettings = ExperimentSettings()
    native: Annotated[NativeSettings, NoDecode] = NativeSettings()

    def serve_ref(self) -> str:
        """The registry reference the service serves."""
        if self.serve.model:
            return self.serve.model
        if self.serve.variants:  # an experiment: its first variant describes the service
            return self.serve.variants[0].model
        if self.model is None:
            raise ConfigError(["serve.model: required when the config has no model section (e.g. churn@production)"])
        return f"{self.model.name}@production"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment beats the file (passed as init kwargs); the short
        # SHIPML_REGISTRY_URI beats everything, as MLflow users expect.
        return (_RegistryUriSource(settings_cls), env_settings, init_settings)

    def require_training(self) -> tuple[ModelSettings, DataSettings]:
        """The sections training needs, or a ConfigError naming the missing ones."""
        problems = [f"{key}: required section missing" for key in ("model", "data") if getattr(self, key) is None]
        if problems:
            raise ConfigError(problems)
        assert self.model is not None and self.data is not None  # noqa: S101 - narrowed above
        return self.model, self.data


class _RegistryUriSource(InitSettingsSource):
    """``SHIPML_REGISTRY_URI`` as a short form of ``SHIPML_REGISTRY__URI``."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        uri = os.environ.get("SHIPML_REGISTRY_URI")
        super().__init__(settings_cls, {"registry": {"uri": uri}} if uri else {})


def load_settings(path: str | Path | None = None, *, overrides: dict[str, Any] | None = None) -> Settings:
    """Read ``path`` (default ``shipml.yaml`` if present) into ``Settings``.

    ``overrides`` (from CLI flags) are applied last, as nested dicts.
    """
    data: dict[str, Any] = {}
    source = ""
    if path is not None or Path(DEFAULT_CONFIG).exists():
        file = Path(path) if path is not None else Path(DEFAULT_CONFIG)
        source = str(file)
        data = _read_yaml(file)
    return settings_from_mapping(data, source, overrides=overrides)


def settings_from_text(text: str, source: str) -> Settings:
    """Settings from YAML text (the embedded example configs)."""
    loaded = yaml.safe_load(text)
    return settings_from_mapping(loaded if isinstance(loaded, dict) else {}, source)


def settings_from_mapping(
    data: dict[str, Any], source: str = "", *, overrides: dict[str, Any] | None = None
) -> Settings:
    """Validate a parsed mapping (plus the environment) into Settings."""
    try:
        settings = Settings(**data)
        if overrides:
            merged = _deep_merge(settings.model_dump(exclude_unset=False), overrides)
            settings = _without_environment(merged)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc), source) from None
    return settings


def _without_environment(values: dict[str, Any]) -> Settings:
    """``values`` (file and environment already merged, CLI flags on top) validated as they are.

    ``Settings.model_validate`` would run the settings sources again, and there the environment
    ranks above init values: a ``--port`` flag would silently lose to ``SHIPML_SERVE__PORT``.
    """
    # `_build_sources` is pydantic-settings' documented way in; the mypy plugin only knows the fields
    return Settings(_build_sources=((InitSettingsSource(Settings, values),), {}))  # type: ignore[call-arg]


# userinfo runs to the last "@" before the path: an unescaped "@" in a password stays inside it
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/?#\s]*)@")


def redact_uri(text: str) -> str:
    """``text`` with the credentials of every URI in it masked: ``scheme://user:***@host``.

    A user name alone (``https://token@host``) is often the secret itself, so it is masked whole.
    """

    def mask(m: re.Match[str]) -> str:
        user, colon, _ = m.group("userinfo").partition(":")
        return f"{m.group('scheme')}{user}:***@" if colon else f"{m.group('scheme')}***@"

    return _USERINFO.sub(mask, text)


def _read_yaml(file: Path) -> dict[str, Any]:
    if not file.is_file():
        raise ConfigError([f"config file not found: {file}"])
    try:
        loaded = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{file}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(file)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{where}: invalid YAML: {problem}"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{file}: cannot read: {exc}"]) from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError([f"{file}: must be a mapping of keys to values, got {type(loaded).__name__}"])
    return loaded


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


_BOUNDS = {
    "greater_than_equal": (">=", "ge"),
    "greater_than": (">", "gt"),
    "less_than_equal": ("<=", "le"),
    "less_than": ("<", "lt"),
}


def format_validation_error(exc: ValidationError) -> list[str]:
    """One line per problem: ``key.path: what is wrong, got what``."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        kind = err["type"]
        got = err.get("input")
        ctx = err.get("ctx") or {}
        if kind in _BOUNDS:
            op, key = _BOUNDS[kind]
            text = f"must be {op} {ctx[key]}, got {got}"
        elif kind == "extra_forbidden":
            text = "unknown key" + _suggestion(err["loc"])
        elif kind == "missing":
            text = "required value missing"
        else:
            msg = str(err["msg"]).replace("Value error, ", "")
            msg = msg.replace("Input should be", "must be").replace("String should", "must")
            text = msg if kind == "value_error" else f"{msg}, got {got!r}"
        lines.append(f"{loc}: {text}")
    return lines


def _suggestion(loc: tuple[int | str, ...]) -> str:
    """`, did you mean 'cv_folds'?` for a misspelt key, when one is close."""
    model: Any = Settings
    for part in loc[:-1]:
        field = model.model_fields.get(str(part)) if hasattr(model, "model_fields") else None
        if field is None:
            return ""
        model = _model_of(field.annotation)
        if model is None:
            return ""
    names = list(model.model_fields) if hasattr(model, "model_fields") else []
    close = difflib.get_close_matches(str(loc[-1]), names, n=1)
    return f", did you mean {close[0]!r}?" if close else ""


def _model_of(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


WORKER_CONFIG_ENV = "SHIPML_CONFIG_FILE"


def settings_for_worker() -> Settings:
    """Settings of a server worker process: the file named by ``SHIPML_CONFIG_FILE``, plus the environment."""
    return load_settings(os.environ.get(WORKER_CONFIG_ENV) or None)


def worker_environment(config: str | Path | None, overrides: dict[str, str]) -> dict[str, str]:
    """Environment that makes worker processes build the same Settings as this process."""
    env = {f"SHIPML_{key.upper().replace('.', '__')}": value for key, value in overrides.items()}
    if "registry.uri" in overrides:
        # the short form ranks above the nested one: a user's own SHIPML_REGISTRY_URI would win in the workers
        env["SHIPML_REGISTRY_URI"] = overrides["registry.uri"]
    if config is not None:
        env[WORKER_CONFIG_ENV] = str(Path(config).resolve())
    elif Path(DEFAULT_CONFIG).exists():
        env[WORKER_CONFIG_ENV] = str(Path(DEFAULT_CONFIG).resolve())
    return env


def starter_config() -> str:
    """The commented config that ``shipml init`` writes."""
    return resources.files("shipml").joinpath("starter.yaml").read_text(encoding="utf-8")
