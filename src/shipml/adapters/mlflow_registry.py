"""The model registry on MLflow: runs, versions, aliases with a history, integrity-checked loads.

Conventions (ARCHITECTURE.md): one registered model per name; aliases
``staging``, ``production``, ``previous``, never the deprecated stages. Every
alias move is appended to the registered model's tags as
``shipml.history.<seq>`` so the history lives wherever the registry lives.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import re
import subprocess
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shipml.config import RegistrySettings
from shipml.errors import ModelLoadError, RegistryError

ALIASES = ("staging", "production", "previous")
HISTORY_PREFIX = "shipml.history."
MANIFEST = "shipml/manifest.json"
_REF = re.compile(
    r"^(?:models:/)?(?P<name>[A-Za-z0-9_.-]+)(?:(?:@(?P<alias>[A-Za-z0-9_-]+))|(?:[/:](?P<version>\d+)))?$"
)


@dataclass(frozen=True)
class ModelRef:
    """A registered model version, by number or by alias."""

    name: str
    version: str | None = None
    alias: str | None = None

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        """``churn@production``, ``churn/3``, ``churn:3``, ``models:/churn@staging``; never a path or URL."""
        m = _REF.match(text.strip())
        if m is None:
            raise RegistryError(f"model reference {text!r}: expected NAME@ALIAS or NAME/VERSION, e.g. churn@production")
        return cls(m["name"], m["version"], m["alias"])

    def __str__(self) -> str:
        return f"{self.name}@{self.alias}" if self.alias else f"{self.name}/{self.version}"


@dataclass(frozen=True)
class VersionInfo:
    """What the registry knows of one model version."""

    name: str
    version: str
    run_id: str
    created_at: datetime
    aliases: tuple[str, ...]
    tags: dict[str, str]
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    source: str = ""


@dataclass(frozen=True)
class AliasMove:
    """One move of an alias: who moved it from which version to which, when and why."""

    time: str
    user: str
    alias: str
    from_version: str | None
    to_version: str | None
    reason: str


@dataclass(frozen=True)
class RunPayload:
    """Everything one training run logs, prepared by the train pipeline."""

    name: str
    run_name: str
    params: dict[str, str]
    metrics: dict[str, float]
    tags: dict[str, str]
    files: dict[str, str]  # artifact path -> text content
    model: Any  # the fitted sklearn Pipeline
    input_example: Any  # a small DataFrame of features
    pip_requirements: tuple[str, ...] = ()
    model_files: dict[str, bytes] = field(default_factory=dict)  # saved next to the model, under the manifest


FAST_PREDICTOR_FILE = "shipml_fast.npz"  # the packed, verified fast predictor (core/fast/model.py)


class LoadedModel:
    """A registered version's files, after the integrity check; the pipeline is unpickled on first use
    (a server that serves a verified packed fast predictor never needs it, nor sklearn)."""

    def __init__(self, info: VersionInfo, local_dir: Path, load_pipeline: Callable[[], Any]) -> None:
        self.info = info
        self.local_dir = local_dir
        self._load_pipeline = load_pipeline
        self._pipeline: Any = None
        self._lock = threading.Lock()

    @property
    def pipeline(self) -> Any:
        with self._lock:
            if self._pipeline is None:
                self._pipeline = self._load_pipeline()
            return self._pipeline

    def model_file(self, name: str) -> Path | None:
        """A file registered next to the model (covered by the manifest), if there is one."""
        path = self.local_dir / "model" / name
        return path if path.is_file() else None


@contextmanager
def _mlflow_errors(what: str) -> Iterator[None]:
    """MLflow's exceptions as RegistryError with a one-line message."""
    from mlflow.exceptions import MlflowException, RestException

    try:
        yield
    except RestException as exc:
        raise RegistryError(f"{what}: {exc.message}") from None
    except MlflowException as exc:
        text = str(exc.message).splitlines()[0]
        if "API request to" in text or "Max retries" in text:
            text = "registry unreachable: " + text
        raise RegistryError(f"{what}: {text}") from None


def _quiet_mlflow() -> None:
    for name in ("mlflow", "alembic", "mlflow.store.db.utils"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="mlflow")


class MlflowRegistry:
    """A shipml view of one MLflow tracking server / registry."""

    def __init__(self, settings: RegistrySettings, *, user: str | None = None) -> None:
        _quiet_mlflow()
        from mlflow import MlflowClient

        self.settings = settings
        self.uri = settings.uri
        self.user = user or _current_user()
        if self.uri.startswith("sqlite:///"):
            Path(self.uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    # -- runs and versions ---------------------------------------------------

    def _experiment_id(self) -> str:
        exp = self.client.get_experiment_by_name(self.settings.experiment)
        if exp is not None:
            return str(exp.experiment_id)
        location = None
        if not self.uri.startswith(("http://", "https://", "databricks")):
            root = Path(self.settings.artifact_root).resolve()
            root.mkdir(parents=True, exist_ok=True)
            location = root.as_uri()
        return str(self.client.create_experiment(self.settings.experiment, artifact_location=location))

    def register(self, payload: RunPayload) -> VersionInfo:
        """Log one run (params, metrics, model, files) and register its model as a new version."""
        import mlflow.models
        import mlflow.sklearn

        with _mlflow_errors(f"registering {payload.name}"):
            run = self.client.create_run(self._experiment_id(), run_name=payload.run_name, tags=payload.tags)
            run_id = run.info.run_id
            try:
                digest = self._log_run(run_id, payload, mlflow.models, mlflow.sklearn)
            except BaseException:
                self.client.set_terminated(run_id, status="FAILED")
                raise
            self.client.set_terminated(run_id)
            if not self._model_exists(payload.name):
                self.client.create_registered_model(payload.name, description="managed by shipml")
            mv = self.client.create_model_version(
                payload.name,
                f"{run.info.artifact_uri}/model",
                run_id=run_id,
                tags={**payload.tags, "shipml.manifest_sha256": digest},
            )
        return self.get_version(payload.name, str(mv.version))

    def _log_run(self, run_id: str, payload: RunPayload, models: Any, sklearn_flavor: Any) -> str:
        """Log everything of the run; returns the sha256 of the model's file manifest."""
        from mlflow.entities import Metric, Param

        now = int(datetime.now(UTC).timestamp() * 1000)
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, v, now, 0) for k, v in sorted(payload.metrics.items())],
            params=[Param(k, v) for k, v in sorted(payload.params.items())],
        )
        with tempfile.TemporaryDirectory(prefix="shipml-") as tmp:
            model_dir = Path(tmp) / "model"
            example = payload.input_example
            signature = models.infer_signature(example, payload.model.predict(example))
            sklearn_flavor.save_model(
                payload.model,
                str(model_dir),
                signature=signature,
                input_example=example,
                pip_requirements=list(payload.pip_requirements) or None,
                serialization_format="skops",
                skops_trusted_types=skops_trusted_types(payload.model),
            )
            for name, data in payload.model_files.items():
                (model_dir / name).write_bytes(data)
            extra = Path(tmp) / "shipml"
            extra.mkdir()
            for rel, text in payload.files.items():
                (Path(tmp) / rel).parent.mkdir(parents=True, exist_ok=True)
                (Path(tmp) / rel).write_text(text, encoding="utf-8")
            manifest = _manifest(Path(tmp), "model")
            (Path(tmp) / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
            self.client.log_artifacts(run_id, str(model_dir), "model")
            self.client.log_artifacts(run_id, str(extra), "shipml")
            digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()
            self.client.set_tag(run_id, "shipml.manifest_sha256", digest)
        return digest

    def _model_exists(self, name: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(name)
        except MlflowException:
            return False
        return True

    def require_model(self, name: str) -> None:
        if not self._model_exists(name):
            known = ", ".join(m for m, *_ in self.list_models()) or "none"
            raise RegistryError(f"unknown model {name!r} (registered models: {known})")

    def get_version(self, name: str, version: str) -> VersionInfo:
        self.require_model(name)
        from mlflow.exceptions import MlflowException

        try:
            mv = self.client.get_model_version(name, version)
        except MlflowException:
            versions = ", ".join(str(v.version) for v in self.versions(name)) or "none"
            raise RegistryError(f"model {name!r} has no version {version} (versions: {versions})") from None
        return self._info(mv)

    def resolve(self, ref: ModelRef) -> VersionInfo:
        """The version a reference points at; an unknown alias or version is a RegistryError."""
        if ref.version is not None:
            return self.get_version(ref.name, ref.version)
        self.require_model(ref.name)
        alias = ref.alias or "production"
        from mlflow.exceptions import MlflowException

        try:
            mv = self.client.get_model_version_by_alias(ref.name, alias)
        except MlflowException:
            raise RegistryError(f"model {ref.name!r} has no version with alias {alias!r}") from None
        return self._info(mv)

    def _info(self, mv: Any) -> VersionInfo:
        metrics: dict[str, float] = {}
        params: dict[str, str] = {}
        if mv.run_id:
            with _mlflow_errors(f"reading run of {mv.name}/{mv.version}"):
                run = self.client.get_run(mv.run_id)
            metrics, params = dict(run.data.metrics), dict(run.data.params)
        return VersionInfo(
            name=mv.name,
            version=str(mv.version),
            run_id=mv.run_id or "",
            created_at=datetime.fromtimestamp(mv.creation_timestamp / 1000, tz=UTC),
            aliases=tuple(sorted(mv.aliases or ())),
            tags=dict(mv.tags or {}),
            metrics=metrics,
            params=params,
            source=mv.source,
        )

    def versions(self, name: str) -> list[Any]:
        with _mlflow_errors(f"listing versions of {name}"):
            found = self.client.search_model_versions(f"name = '{name}'")
        return sorted(found, key=lambda v: int(v.version))

    def list_models(self) -> list[tuple[str, str, dict[str, str]]]:
        """(name, latest version, alias -> version) of every registered model."""
        with _mlflow_errors("listing models"):
            models = self.client.search_registered_models()
        out = []
        for m in sorted(models, key=lambda m: m.name):
            latest = max((int(v.version) for v in self.versions(m.name)), default=0)
            out.append((m.name, str(latest) if latest else "-", {k: str(v) for k, v in (m.aliases or {}).items()}))
        return out

    def aliases(self, name: str) -> dict[str, str]:
        with _mlflow_errors(f"reading {name}"):
            aliases = self.client.get_registered_model(name).aliases or {}
        return {k: str(v) for k, v in aliases.items()}

    # -- aliases -----------------------------------------------------------------

    def move_alias(self, name: str, alias: str, version: str | None, reason: str) -> AliasMove:
        """Point ``alias`` at ``version`` (or remove it when None) and append the move to the history."""
        current = self.aliases(name).get(alias)
        with _mlflow_errors(f"moving {name}@{alias}"):
            if version is None:
                if current is not None:
                    self.client.delete_registered_model_alias(name, alias)
            else:
                self.client.set_registered_model_alias(name, alias, version)
            move = AliasMove(
                datetime.now(UTC).isoformat(timespec="milliseconds"), self.user, alias, current, version, reason
            )
            seq = len(self._history_tags(name)) + 1
            self.client.set_registered_model_tag(name, f"{HISTORY_PREFIX}{seq:06d}", json.dumps(move.__dict__))
        return move

    def _history_tags(self, name: str) -> dict[str, str]:
        with _mlflow_errors(f"reading {name}"):
            tags = self.client.get_registered_model(name).tags or {}
        return {k: v for k, v in tags.items() if k.startswith(HISTORY_PREFIX)}

    def history(self, name: str) -> list[AliasMove]:
        self.require_model(name)
        tags = self._history_tags(name)
        return [AliasMove(**json.loads(tags[k])) for k in sorted(tags)]

    # -- loading -----------------------------------------------------------------

    def load(self, ref: ModelRef, cache_dir: Path) -> LoadedModel:
        """Download a version, check every model file's sha256 against the manifest, then unpickle."""
        import mlflow.artifacts

        info = self.resolve(ref)
        cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        cache_dir.chmod(0o700)  # mkdir's mode is masked by the umask and ignored for an existing directory
        target = Path(tempfile.mkdtemp(prefix=f"{info.name}-{info.version}-", dir=cache_dir))
        with _mlflow_errors(f"downloading {info.name}/{info.version}"):
            root = mlflow.artifacts.download_artifacts(
                run_id=info.run_id, artifact_path="", dst_path=str(target), tracking_uri=self.uri
            )
        verify_manifest(Path(root), info.tags.get("shipml.manifest_sha256"), f"{info.name}/{info.version}")

        def load_pipeline() -> Any:
            import mlflow.sklearn

            try:
                return mlflow.sklearn.load_model(str(Path(root) / "model"))
            except Exception as exc:
                raise ModelLoadError(f"{info.name}/{info.version}: cannot load model: {exc}") from None

        return LoadedModel(info, Path(root), load_pipeline)


# Types from these packages may be in a model skops loads; anything else refuses to register.
TRUSTED_MODULES = ("sklearn.", "numpy.", "scipy.", "lightgbm.", "xgboost.", "builtins.", "collections.")


def skops_trusted_types(model: object) -> list[str]:
    """The non-default types skops must accept to load ``model``, all from trusted libraries."""
    import skops.io

    needed = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    foreign = [t for t in needed if not t.startswith(TRUSTED_MODULES)]
    if foreign:
        raise RegistryError(f"model contains types from untrusted modules: {', '.join(foreign)}")
    return list(needed)


def _manifest(root: Path, sub: str) -> dict[str, str]:
    files = sorted(p for p in (root / sub).rglob("*") if p.is_file())
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def verify_manifest(root: Path, expected_digest: str | None, what: str) -> None:
    """Refuse a download whose model files differ from the ones registered."""
    manifest_file = root / MANIFEST
    if expected_digest is None or not manifest_file.is_file():
        raise ModelLoadError(f"{what}: no integrity manifest; not registered by shipml, refusing to load")
    manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
    digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()
    if digest != expected_digest:
        raise ModelLoadError(f"{what}: manifest sha256 mismatch: expected {expected_digest}, got {digest}")
    actual = _manifest(root, "model")
    for rel, sha in sorted(manifest.items()):
        if actual.get(rel) != sha:
            raise ModelLoadError(f"{what}: {rel} sha256 mismatch: registered {sha}, got {actual.get(rel)}")
    extra = sorted(set(actual) - set(manifest))
    if extra:
        raise ModelLoadError(f"{what}: unregistered file(s) in model: {', '.join(extra)}")


def git_commit(cwd: Path | None = None) -> str | None:
    """The commit of the git repository around ``cwd``, or None outside one."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],  # noqa: S607
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _current_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def tags_from(mapping: Mapping[str, object]) -> dict[str, str]:
    """MLflow tags and params are strings."""
    return {k: str(v) for k, v in mapping.items()}
