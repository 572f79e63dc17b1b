"""What a load trusts: every file shipml loads is in the manifest, skops only, MLflow's own tools tolerated,
and the local cache of versions (one verified directory per version, re-checked before each use)."""

from __future__ import annotations

import json
import logging
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from shipml.adapters.registry import MANIFEST, MANIFEST_TAG, MlflowRegistry, ModelRef, build_manifest, manifest_digest
from shipml.config import RegistrySettings
from shipml.errors import ModelLoadError
from shipml.examples.churn import generate_churn
from shipml.pipelines.bundle import load_bundle
from shipml.pipelines.data import feature_frame
from shipml.pipelines.promote import promote
from shipml.pipelines.train import TrainOutcome, train_and_register
from tests.support.project import churn_settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The module's registry and data (the tests' caches are their own)."""
    return tmp_path_factory.mktemp("integrity")


@pytest.fixture(scope="module")
def registry(home: Path) -> MlflowRegistry:
    return MlflowRegistry(
        RegistrySettings(uri=f"sqlite:///{home}/reg/mlflow.db", artifact_root=str(home / "reg" / "art"))
    )


@pytest.fixture(scope="module")
def trained_once(registry: MlflowRegistry, home: Path) -> TrainOutcome:
    data = home / "churn.csv"
    generate_churn(2_000, seed=7).to_csv(data, index=False)
    outcome = train_and_register(churn_settings(data), registry)
    promote(registry, "churn", "1", "production", "test")
    return outcome


@pytest.fixture
def trained(registry: MlflowRegistry, trained_once: TrainOutcome, home: Path) -> Iterator[TrainOutcome]:
    """churn/1 in production, trained once for the module: what a test changes in its stored files or its
    manifest tag is put back exactly after it."""
    root = stored(home)
    backup = home / "stored.orig"
    shutil.copytree(root, backup, symlinks=True)
    tag = registry.client.get_model_version("churn", "1").tags[MANIFEST_TAG]
    try:
        yield trained_once
    finally:
        shutil.rmtree(root)
        backup.rename(root)
        registry.client.set_model_version_tag("churn", "1", MANIFEST_TAG, tag)


def stored(home: Path) -> Path:
    """The run's artifact root in the embedded store (holds model/ and shipml/)."""
    return next((home / "reg" / "art").rglob("MLmodel")).parent.parent


def flip_byte(path: Path) -> bytes:
    original = path.read_bytes()
    data = bytearray(original)
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    return original


def reregister_manifest(registry: MlflowRegistry, root: Path, manifest: dict[str, object] | None = None) -> None:
    """What registering these files would have recorded: a new manifest and its tag on the version."""
    manifest = manifest if manifest is not None else build_manifest(root)
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    registry.client.set_model_version_tag("churn", "1", MANIFEST_TAG, manifest_digest(manifest))


def cached_versions(cache: Path) -> list[str]:
    return sorted(p.name for p in (cache / "churn").iterdir() if p.is_dir())


# -- L1: the manifest covers every file shipml loads; skops only ----------------------------------------


@pytest.mark.parametrize(
    "rel", ["shipml/schema.json", "shipml/input_example.json", "shipml/profile.json", "shipml/fast_path.json"]
)
def test_a_changed_shipml_file_is_refused_naming_the_file(
    registry: MlflowRegistry, trained: TrainOutcome, home: Path, workdir: Path, rel: str
) -> None:
    flip_byte(stored(home) / rel)
    with pytest.raises(ModelLoadError, match=rf"^churn/1: {rel} sha256 mismatch: registered [0-9a-f]{{64}}, got "):
        registry.load(ModelRef.parse("churn@production"), workdir / "cache")


def test_an_unknown_file_beside_the_shipml_files_is_refused(
    registry: MlflowRegistry, trained: TrainOutcome, home: Path, workdir: Path
) -> None:
    (stored(home) / "shipml" / "schema_override.json").write_text("{}")
    with pytest.raises(ModelLoadError, match=r"^churn/1: unregistered file\(s\).*: shipml/schema_override.json$"):
        registry.load(ModelRef.parse("churn/1"), workdir / "cache")


@pytest.mark.parametrize("fmt", ["pickle", "cloudpickle"])
def test_a_model_that_is_not_skops_is_refused_before_it_is_deserialized(
    registry: MlflowRegistry, trained: TrainOutcome, home: Path, workdir: Path, fmt: str
) -> None:
    root = stored(home)
    mlmodel = root / "model" / "MLmodel"
    mlmodel.write_text(mlmodel.read_text().replace("serialization_format: skops", f"serialization_format: {fmt}"))
    reregister_manifest(registry, root)  # as if it had been registered so: the manifest matches
    with pytest.raises(
        ModelLoadError,
        match=rf"^churn/1: model/MLmodel: serialization_format must be skops, got '{fmt}'; shipml never loads",
    ):
        registry.load(ModelRef.parse("churn/1"), workdir / "cache")


def test_a_version_registered_before_the_manifest_covered_shipml_files_still_loads(
    registry: MlflowRegistry, trained: TrainOutcome, home: Path, workdir: Path
) -> None:
    root = stored(home)
    files = build_manifest(root)["files"]
    assert isinstance(files, dict)
    reregister_manifest(registry, root, {k: v for k, v in files.items() if k.startswith("model/")})  # format 1
    loaded = registry.load(ModelRef.parse("churn/1"), workdir / "cache")
    flip_byte(root / "model" / "model.skops")
    with pytest.raises(ModelLoadError, match=r"churn/1: model/model.skops sha256 mismatch"):
        registry.load(ModelRef.parse("churn/1"), workdir / "other-cache")
    assert loaded.info.version == "1"


# -- MLflow's own loader writes into the stored model folder ----------------------------------------------


def test_a_version_loaded_by_mlflow_pyfunc_keeps_loading_in_shipml(
    registry: MlflowRegistry, trained: TrainOutcome, home: Path, workdir: Path
) -> None:
    import mlflow.pyfunc

    root = stored(home)
    mlflow.set_tracking_uri(registry.uri)
    try:
        mlflow.pyfunc.load_model("models:/churn@production")
    finally:
        mlflow.set_tracking_uri(None)
    assert (root / "model" / "registered_model_meta").is_file()  # what MLflow wrote beside the model files
    loaded = registry.load(ModelRef.parse("churn@production"), workdir / "cache")
    X = feature_frame(trained.result.input_example, trained.result.schema)
    np.testing.assert_array_equal(loaded.pipeline.predict_proba(X), trained.result.pipeline.predict_proba(X))
    # ... and every other file is still checked
    (root / "model" / "registered_model_meta.py").write_text("import os")
    with pytest.raises(ModelLoadError, match=r"unregistered file\(s\).*: model/registered_model_meta.py$"):
        registry.load(ModelRef.parse("churn@production"), workdir / "cache2")
    (root / "model" / "registered_model_meta.py").unlink()
    flip_byte(root / "model" / "MLmodel")
    with pytest.raises(ModelLoadError, match=r"churn/1: model/MLmodel sha256 mismatch"):
        registry.load(ModelRef.parse("churn@production"), workdir / "cache3")


# -- M7: one verified directory per version, reused ------------------------------------------------------


def test_loads_and_reloads_of_one_version_leave_one_cached_directory(
    registry: MlflowRegistry, trained: TrainOutcome, workdir: Path
) -> None:
    cache = workdir / "cache"
    for _ in range(3):
        registry.load(ModelRef.parse("churn@production"), cache)
    for _ in range(2):  # what a server does at each start and forced reload
        load_bundle(registry, ModelRef.parse("churn/1"), cache)
    assert len(cached_versions(cache)) == 1
    assert sorted(p.name for p in (cache / "churn").iterdir()) == [".lock", cached_versions(cache)[0]]
    assert (cache / "churn" / cached_versions(cache)[0]).stat().st_mode & 0o777 == 0o700


def test_a_byte_flipped_in_the_cached_copy_is_detected_and_the_version_fetched_again(
    registry: MlflowRegistry, trained: TrainOutcome, workdir: Path
) -> None:
    cache = workdir / "cache"
    first = registry.load(ModelRef.parse("churn/1"), cache)
    cached = first.local_dir / "model" / "model.skops"
    original = flip_byte(cached)
    again = registry.load(ModelRef.parse("churn/1"), cache)
    assert again.local_dir == first.local_dir
    assert cached.read_bytes() == original  # the tampered copy was refused and replaced
    X = feature_frame(trained.result.input_example, trained.result.schema)
    np.testing.assert_array_equal(again.pipeline.predict_proba(X), trained.result.pipeline.predict_proba(X))
    assert len(cached_versions(cache)) == 1


def test_a_cached_copy_changed_after_load_is_checked_again_before_the_model_is_deserialized(
    registry: MlflowRegistry, trained: TrainOutcome, home: Path, workdir: Path
) -> None:
    loaded = registry.load(ModelRef.parse("churn/1"), workdir / "cache")
    flip_byte(stored(home) / "model" / "model.skops")  # the store is bad now: no good copy to fetch
    flip_byte(loaded.local_dir / "model" / "model.skops")
    with pytest.raises(ModelLoadError, match=r"churn/1: model/model.skops sha256 mismatch"):
        _ = loaded.pipeline


# -- structure: no global logging changes from a library object ---------------------------------------


def test_building_a_registry_leaves_logging_and_warnings_alone(workdir: Path) -> None:
    from mlflow import MlflowClient  # noqa: F401 - MLflow configures its own logger when imported

    logger = logging.getLogger("mlflow")
    level = logger.level
    with warnings.catch_warnings():  # whatever an earlier test did, start from no mlflow filter
        warnings.resetwarnings()
        logger.setLevel(logging.NOTSET)
        try:
            MlflowRegistry(RegistrySettings(uri=f"sqlite:///{workdir}/q/mlflow.db", artifact_root=str(workdir / "q")))
            assert (logger.level, warnings.filters) == (logging.NOTSET, [])
        finally:
            logger.setLevel(level)
