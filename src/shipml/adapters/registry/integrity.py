"""What makes a registered version trustworthy to load: the manifest of every file shipml loads, and skops only.

At registration the manifest lists the sha256 of every file under ``model/`` and ``shipml/`` (the model,
MLmodel, the packed fast predictor, the schema, profile, input example, fast-path verdict ...); its own
sha256 is a tag on the version, which lives in the registry's database, not in the artifact store. A load
checks the tree it downloaded against both before anything is parsed or deserialized.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import structlog

from shipml.errors import IntegrityError, ModelLoadError, RegistryError

log = structlog.get_logger("shipml.registry")

MANIFEST = "shipml/manifest.json"
MANIFEST_TAG = "shipml.manifest_sha256"
FAST_PREDICTOR_FILE = "shipml_fast.npz"  # the packed, verified fast predictor (core/fast/model.py)
# The artifact folders shipml downloads and loads from; the manifest covers all of them.
COVERED = ("model", "shipml")
MANIFEST_FORMAT = 2  # 1 (no "format" key): a flat {path: sha256} of model/ only

# Files MLflow's own tools write into a model's folder in the artifact store. shipml never reads them:
# `mlflow.pyfunc.load_model("models:/NAME@ALIAS")` on a local artifact store writes `registered_model_meta`
# (the model's name and version, models_artifact_repo.py) into the stored model folder. Exact paths, so
# that nothing else escapes the manifest.
MLFLOW_OWNED = frozenset({"model/registered_model_meta"})

# Types from these packages may be in a model skops loads; anything else refuses to register or load.
TRUSTED_MODULES = ("sklearn.", "numpy.", "scipy.", "lightgbm.", "xgboost.", "builtins.", "collections.")


def skops_trusted_types(model: object) -> list[str]:
    """The non-default types skops must accept to load ``model``, all from trusted libraries."""
    import skops.io

    needed = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    foreign = [t for t in needed if not t.startswith(TRUSTED_MODULES)]
    if foreign:
        raise RegistryError(f"model contains types from untrusted modules: {', '.join(foreign)}")
    return list(needed)


def _hashes(root: Path, subs: tuple[str, ...]) -> dict[str, str]:
    files = sorted(p for sub in subs for p in (root / sub).rglob("*") if p.is_file())
    hashed = {p.relative_to(root).as_posix(): _sha256(p) for p in files}
    hashed.pop(MANIFEST, None)
    return hashed


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build_manifest(root: Path) -> dict[str, Any]:
    """The manifest of the artifact tree at ``root`` (every file under model/ and shipml/)."""
    return {"format": MANIFEST_FORMAT, "files": _hashes(root, COVERED)}


def manifest_digest(manifest: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()


def verify_manifest(root: Path, expected_digest: str | None, what: str) -> None:
    """Refuse a tree whose files differ from the ones registered: a changed, missing or unknown file."""
    manifest_file = root / MANIFEST
    if expected_digest is None or not manifest_file.is_file():
        raise ModelLoadError(f"{what}: no integrity manifest; not registered by shipml, refusing to load")
    try:
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{what}: unreadable integrity manifest: {exc}") from None
    digest = manifest_digest(manifest) if isinstance(manifest, dict) else None
    if digest != expected_digest:
        raise IntegrityError(f"{what}: manifest sha256 mismatch: expected {expected_digest}, got {digest}")
    scope: tuple[str, ...] = COVERED
    if "format" in manifest:
        registered = manifest.get("files", {})
    else:
        # Registered before the manifest covered shipml/: only model/ can be checked. The tag pins
        # the manifest, so a new version's manifest cannot be swapped for one of this form.
        registered, scope = manifest, ("model",)
        log.warning("manifest_covers_model_only", model=what)
    actual = _hashes(root, scope)
    for rel, sha in sorted(registered.items()):
        if actual.get(rel) != sha:
            got = actual.get(rel, "no such file")
            raise IntegrityError(f"{what}: {rel} sha256 mismatch: registered {sha}, got {got}")
    extra = sorted(set(actual) - set(registered) - MLFLOW_OWNED)
    if extra:
        raise IntegrityError(f"{what}: unregistered file(s) in the model's artifacts: {', '.join(extra)}")


def skops_model(root: Path, what: str) -> tuple[Path, list[str]]:
    """The skops file and its trusted types from ``model/MLmodel``; any other format is refused.

    Called on a verified tree, before anything is deserialized: shipml loads skops only (never pickle or
    cloudpickle, which run code), and only types from trusted libraries.
    """
    import yaml

    where = f"{what}: model/MLmodel"
    try:
        mlmodel = yaml.safe_load((root / "model" / "MLmodel").read_text(encoding="utf-8"))
        flavor = mlmodel["flavors"]["sklearn"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"{where}: no readable sklearn flavor: {exc}") from None
    if not isinstance(flavor, dict):
        raise ModelLoadError(f"{where}: flavors.sklearn: expected a mapping, got {type(flavor).__name__}")
    fmt = flavor.get("serialization_format", "pickle")  # MLflow's own default when the key is absent
    if fmt != "skops":
        raise ModelLoadError(
            f"{where}: serialization_format must be skops, got {fmt!r}; shipml never loads pickled models"
        )
    file = flavor.get("pickled_model")
    if not isinstance(file, str) or "/" in file or "\\" in file or file in ("", ".", ".."):
        raise ModelLoadError(f"{where}: pickled_model: expected a file name in model/, got {file!r}")
    trusted = flavor.get("skops_trusted_types") or []
    if not isinstance(trusted, list) or not all(isinstance(t, str) for t in trusted):
        raise ModelLoadError(f"{where}: skops_trusted_types: expected a list of type names, got {trusted!r}")
    foreign = [t for t in trusted if not t.startswith(TRUSTED_MODULES)]
    if foreign:
        raise ModelLoadError(f"{where}: skops_trusted_types from untrusted modules: {', '.join(foreign)}")
    return root / "model" / file, trusted
