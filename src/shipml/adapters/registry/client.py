"""The model registry on MLflow: runs, versions, aliases with a history, integrity-checked loads.

Conventions (ARCHITECTURE.md): one registered model per name; aliases ``staging``, ``production``,
``previous``, never the deprecated stages. Every alias move is kept as a registered-model tag
(``history.py``), so the history lives wherever the registry lives.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import warnings
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shipml.adapters.registry.cache import ArtifactCache, CachedVersion
from shipml.adapters.registry.history import encode_move, new_history_key, read_history
from shipml.adapters.registry.integrity import (
    COVERED,
    MANIFEST,
    MANIFEST_TAG,
    build_manifest,
    manifest_digest,
    skops_model,
    skops_trusted_types,
    verify_manifest,
)
from shipml.adapters.registry.lineage import current_user
from shipml.adapters.registry.refs import AliasMove, ModelRef, RunPayload, VersionInfo
from shipml.config import RegistrySettings
from shipml.core.quiet_imports import pyspark_left_out
from shipml.errors import ModelLoadError, RegistryError


class LoadedModel:
    """A registered version's files, after the integrity check; the pipeline is deserialized on first use
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
    from requests import HTTPError

    try:
        yield
    except RestException as exc:
        raise RegistryError(f"{what}: {exc.message}") from None
    except HTTPError as exc:  # an artifact request the MLflow server answered with an error (its storage down)
        status = exc.response.status_code if exc.response is not None else "no"
        raise RegistryError(f"{what}: the registry answered {status}: {str(exc).splitlines()[0]}") from None
    except MlflowException as exc:
        text = str(exc.message).splitlines()[0]
        if "API request to" in text or "Max retries" in text:
            text = "registry unreachable: " + text
        raise RegistryError(f"{what}: {text}") from None


def quiet_mlflow() -> None:
    """Quieten MLflow's and alembic's logging and warnings, process-wide.

    Changes global state, so only entry points call it, once (the CLI, the server's startup); a library
    user who builds an ``MlflowRegistry`` keeps the logging they configured.
    """
    for name in ("mlflow", "alembic", "mlflow.store.db.utils"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", module="mlflow")


# What skops raises on a file it cannot load (its untrusted-type refusal is a TypeError).
_SKOPS_LOAD_ERRORS = (OSError, ValueError, TypeError, KeyError, AttributeError, ImportError, zipfile.BadZipFile)


_ALIAS_ATTEMPTS = 3  # tries of one alias write that a concurrent write made fail


def _remote(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def mlflow_http_limits(settings: RegistrySettings) -> None:
    """Bound every request to an MLflow server by ``registry.timeout_s`` and ``registry.retries``.

    MLflow reads these from its environment variables only (its own defaults: 120 s, 7 retries backing off over
    about two minutes, so a poll during a registry restart hung for minutes); a value the user set there wins.
    Process-wide, like MLflow's variables themselves.
    """
    limits = {
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(settings.timeout_s),
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(settings.retries),
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    }
    for name, value in limits.items():
        os.environ.setdefault(name, value)


class MlflowRegistry:
    """A shipml view of one MLflow tracking server / registry."""

    def __init__(self, settings: RegistrySettings, *, user: str | None = None) -> None:
        with pyspark_left_out():  # MLflow's schema module imports pyspark when it is installed
            import mlflow.types.schema  # noqa: F401
            from mlflow import MlflowClient

        self.settings = settings
        self.uri = settings.uri
        self.user = user or current_user()
        if self.uri.startswith("sqlite:///"):
            Path(self.uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        if _remote(self.uri):
            mlflow_http_limits(settings)
        self.client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    @staticmethod
    def preload(uri: str) -> None:
        """Import what opening the registry at ``uri`` imports (MLflow's client and its store for the URI's scheme,
        with their ORM mappings configured), opening nothing: a process about to fork workers does it once for all
        of them (``shipml serve --workers N``)."""
        with pyspark_left_out():
            import mlflow.types.schema
            from mlflow import MlflowClient  # noqa: F401

            if _remote(uri):
                import mlflow.store.model_registry.rest_store
                import mlflow.store.tracking.rest_store
            elif not uri.startswith("databricks"):
                import alembic.migration
                import alembic.script  # noqa: F401
                import mlflow.store.model_registry.sqlalchemy_store
                import mlflow.store.tracking.sqlalchemy_store  # noqa: F401
                from sqlalchemy.orm import configure_mappers

                configure_mappers()

    def close(self) -> None:
        """Close the database connections MLflow's stores keep for this URI (SQLAlchemy's rule before a fork: the
        stores stay cached by MLflow, and a forked worker opens connections of its own)."""
        client: Any = self.client
        for store in (client._tracking_client.store, client._get_registry_client().store):
            engine = getattr(store, "engine", None)
            if engine is not None:
                engine.dispose()

    # -- runs and versions ---------------------------------------------------

    def _experiment_id(self) -> str:
        exp = self.client.get_experiment_by_name(self.settings.experiment)
        if exp is not None:
            return str(exp.experiment_id)
        location = None
        if not _remote(self.uri) and not self.uri.startswith("databricks"):
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
                tags={**payload.tags, MANIFEST_TAG: digest},
            )
        return self.get_version(payload.name, str(mv.version))

    def _log_run(self, run_id: str, payload: RunPayload, models: Any, sklearn_flavor: Any) -> str:
        """Log everything of the run; returns the sha256 of the manifest of every file shipml loads."""
        from mlflow.entities import Metric, Param

        now = int(datetime.now(UTC).timestamp() * 1000)
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, v, now, 0) for k, v in sorted(payload.metrics.items())],
            params=[Param(k, v) for k, v in sorted(payload.params.items())],
        )
        with tempfile.TemporaryDirectory(prefix="shipml-") as tmp:
            root = Path(tmp)
            model_dir = root / "model"
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
            extra = root / "shipml"
            extra.mkdir()
            for rel, text in payload.files.items():
                if not rel.startswith("shipml/"):
                    raise RegistryError(f"run file {rel!r}: expected a path under shipml/")
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                (root / rel).write_text(text, encoding="utf-8")
            manifest = build_manifest(root)
            (root / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
            self.client.log_artifacts(run_id, str(model_dir), "model")
            self.client.log_artifacts(run_id, str(extra), "shipml")
            digest = manifest_digest(manifest)
            self.client.set_tag(run_id, MANIFEST_TAG, digest)
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

    def _registered_models(self) -> list[Any]:
        """Every registered model, all pages."""
        found: list[Any] = []
        token = None
        with _mlflow_errors("listing models"):
            while True:
                page = self.client.search_registered_models(page_token=token)
                found.extend(page)
                token = page.token
                if not token:
                    break
        return sorted(found, key=lambda m: m.name)

    def list_models(self) -> list[tuple[str, str, dict[str, str]]]:
        """(name, latest version, alias -> version) of every registered model."""
        out = []
        for m in self._registered_models():
            latest = max((int(v.version) for v in self.versions(m.name)), default=0)
            out.append((m.name, str(latest) if latest else "-", {k: str(v) for k, v in (m.aliases or {}).items()}))
        return out

    def models_with_alias(self, alias: str) -> list[ModelRef]:
        """``NAME@alias`` for every registered model that has a version with ``alias``, by name."""
        return [ModelRef(m.name, alias=alias) for m in self._registered_models() if alias in (m.aliases or {})]

    def aliases(self, name: str) -> dict[str, str]:
        with _mlflow_errors(f"reading {name}"):
            aliases = self.client.get_registered_model(name).aliases or {}
        return {k: str(v) for k, v in aliases.items()}

    # -- aliases -----------------------------------------------------------------

    def move_alias(self, name: str, alias: str, version: str | None, reason: str) -> AliasMove:
        """Point ``alias`` at ``version`` (or remove it when None) and add the move to the history.

        ``from_version`` is read right before the move, so it is the version this move replaced (a
        concurrent move between an earlier read and this one is not skipped over).
        """
        for attempt in range(_ALIAS_ATTEMPTS):
            current = self.aliases(name).get(alias)
            try:
                with _mlflow_errors(f"moving {name}@{alias}"):
                    if version is None:
                        if current is not None:
                            self.client.delete_registered_model_alias(name, alias)
                    else:
                        self.client.set_registered_model_alias(name, alias, version)
                break
            except RegistryError as exc:
                # MLflow sets an alias by read-then-insert: two first sets at once collide on the alias's
                # unique key, and a concurrent delete finds nothing to delete. Setting is idempotent, so
                # read again and retry.
                if attempt == _ALIAS_ATTEMPTS - 1 or "registry unreachable" in exc.message:
                    raise
        with _mlflow_errors(f"recording the move of {name}@{alias}"):
            move = AliasMove(
                datetime.now(UTC).isoformat(timespec="milliseconds"), self.user, alias, current, version, reason
            )
            self.client.set_registered_model_tag(name, new_history_key(), encode_move(move))
        return move

    def history(self, name: str) -> list[AliasMove]:
        """Every recorded alias move of ``name``, oldest first (old sequence-numbered tags included)."""
        self.require_model(name)
        with _mlflow_errors(f"reading {name}"):
            tags = self.client.get_registered_model(name).tags or {}
        return read_history(dict(tags), name)

    # -- loading -----------------------------------------------------------------

    def _proxied_artifacts(self, run_id: str) -> Any:
        """The run's artifacts streamed through the MLflow server, when the server serves them
        (``mlflow-artifacts:`` URIs); None otherwise (the embedded store's local files).

        MLflow's own client would ask the server for presigned URLs of the object store (S3) and download from
        there: every replica would then need to reach the object store, and would fetch whatever URL the server
        names. Streaming through the server keeps shipml's traffic on ``registry.uri`` alone.
        """
        if not _remote(self.uri):
            return None
        from mlflow.store.artifact.http_artifact_repo import HttpArtifactRepository
        from mlflow.store.artifact.mlflow_artifacts_repo import MlflowArtifactsRepository

        artifact_uri = self.client.get_run(run_id).info.artifact_uri
        if not artifact_uri or not artifact_uri.startswith("mlflow-artifacts:"):
            return None
        resolved = MlflowArtifactsRepository.resolve_uri(artifact_uri, self.uri)  # type: ignore[no-untyped-call]
        return HttpArtifactRepository(resolved)  # type: ignore[no-untyped-call]

    def load(self, ref: ModelRef, cache_dir: Path) -> LoadedModel:
        """A version's verified local copy (cached per version under ``cache_dir``); the model is
        deserialized on first use, from skops only, right after one more check of its files."""
        import mlflow.artifacts

        info = self.resolve(ref)
        what = f"{info.name}/{info.version}"
        digest = info.tags.get(MANIFEST_TAG)
        if not digest:
            raise ModelLoadError(f"{what}: no integrity manifest; not registered by shipml, refusing to load")
        cache = ArtifactCache(cache_dir)
        key = CachedVersion(info.name, info.version, digest)

        def download(into: Path) -> None:
            with _mlflow_errors(f"downloading {what}"):
                proxied = self._proxied_artifacts(info.run_id)
                for sub in COVERED:  # what shipml loads, not whatever else the run holds
                    if proxied is not None:
                        proxied.download_artifacts(sub, dst_path=str(into))
                    else:
                        mlflow.artifacts.download_artifacts(
                            run_id=info.run_id, artifact_path=sub, dst_path=str(into), tracking_uri=self.uri
                        )

        def verify(root: Path) -> None:
            verify_manifest(root, digest, what)

        root = cache.ensure(key, download, verify)
        skops_model(root, what)  # a version that is not skops is refused now, not when first predicted on

        def load_pipeline() -> Any:
            import skops.io

            # checked again right before deserializing: the copy may have changed (or been pruned) since
            file, trusted = skops_model(cache.ensure(key, download, verify), what)
            try:
                return skops.io.load(file, trusted=trusted)
            except _SKOPS_LOAD_ERRORS as exc:
                raise ModelLoadError(f"{what}: cannot load model: {exc}") from None

        return LoadedModel(info, root, load_pipeline)


def open_copy(info: VersionInfo, root: Path) -> LoadedModel:
    """A copy of a version's files made elsewhere (a Spark executor's, sent by the driver), checked against the
    manifest registered with ``info`` before anything in it is read: the same checks as ``MlflowRegistry.load``."""
    what = f"{info.name}/{info.version}"
    verify_manifest(root, info.tags.get(MANIFEST_TAG), what)
    file, trusted = skops_model(root, what)

    def load_pipeline() -> Any:
        import skops.io

        try:
            return skops.io.load(file, trusted=trusted)
        except _SKOPS_LOAD_ERRORS as exc:
            raise ModelLoadError(f"{what}: cannot load model: {exc}") from None

    return LoadedModel(info, root, load_pipeline)
