"""The registry adapter's former single module, kept so that existing imports keep working.

The implementation lives in ``shipml.adapters.registry`` (one module per concept).
"""

from shipml.adapters.registry import (
    ALIASES,
    FAST_PREDICTOR_FILE,
    HISTORY_PREFIX,
    MANIFEST,
    TRUSTED_MODULES,
    AliasMove,
    LoadedModel,
    MlflowRegistry,
    ModelRef,
    RunPayload,
    VersionInfo,
    git_commit,
    quiet_mlflow,
    skops_trusted_types,
    tags_from,
    verify_manifest,
)

__all__ = [
    "ALIASES",
    "FAST_PREDICTOR_FILE",
    "HISTORY_PREFIX",
    "MANIFEST",
    "TRUSTED_MODULES",
    "AliasMove",
    "LoadedModel",
    "MlflowRegistry",
    "ModelRef",
    "RunPayload",
    "VersionInfo",
    "git_commit",
    "quiet_mlflow",
    "skops_trusted_types",
    "tags_from",
    "verify_manifest",
]
