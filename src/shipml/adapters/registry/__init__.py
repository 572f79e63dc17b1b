"""The MLflow model registry adapter: references, the client, the integrity manifest, the artifact cache.

Modules: ``refs`` (values), ``client`` (``MlflowRegistry``), ``integrity`` (manifest, skops only),
``cache`` (verified local copies), ``history`` (alias moves), ``lineage`` (git commit, user).
"""

from shipml.adapters.registry.cache import KEEP_VERSIONS, ArtifactCache, CachedVersion
from shipml.adapters.registry.client import LoadedModel, MlflowRegistry, open_copy, quiet_mlflow
from shipml.adapters.registry.history import HISTORY_PREFIX
from shipml.adapters.registry.integrity import (
    FAST_PREDICTOR_FILE,
    MANIFEST,
    MANIFEST_TAG,
    MLFLOW_OWNED,
    TRUSTED_MODULES,
    build_manifest,
    manifest_digest,
    skops_model,
    skops_trusted_types,
    verify_manifest,
)
from shipml.adapters.registry.lineage import git_commit, tags_from
from shipml.adapters.registry.refs import ALIASES, AliasMove, ModelRef, RunPayload, VersionInfo

__all__ = [
    "ALIASES",
    "FAST_PREDICTOR_FILE",
    "HISTORY_PREFIX",
    "KEEP_VERSIONS",
    "MANIFEST",
    "MANIFEST_TAG",
    "MLFLOW_OWNED",
    "TRUSTED_MODULES",
    "AliasMove",
    "ArtifactCache",
    "CachedVersion",
    "LoadedModel",
    "MlflowRegistry",
    "ModelRef",
    "RunPayload",
    "VersionInfo",
    "build_manifest",
    "git_commit",
    "manifest_digest",
    "open_copy",
    "quiet_mlflow",
    "skops_model",
    "skops_trusted_types",
    "tags_from",
    "verify_manifest",
]
