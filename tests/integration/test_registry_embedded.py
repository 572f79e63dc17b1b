"""The registry on the embedded store (SQLite + local artifacts): register, gates, aliases, history, integrity."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from shipml.adapters.mlflow_registry import FAST_PREDICTOR_FILE, MlflowRegistry, ModelRef
from shipml.config import RegistrySettings
from shipml.errors import ModelLoadError, RegistryError
from shipml.pipelines.data import feature_frame
from shipml.pipelines.promote import compare, holder_at, promote, rollback
from shipml.pipelines.train import train_and_register
from tests.conftest import churn_settings

pytestmark = pytest.mark.integration


@pytest.fixture
def registry(workdir: Path) -> MlflowRegistry:
    return MlflowRegistry(
        RegistrySettings(uri=f"sqlite:///{workdir}/reg/mlflow.db", artifact_root=str(workdir / "reg" / "art"))
    )


def test_train_registers_a_version_with_lineage_artifacts_and_staging(
    registry: MlflowRegistry, churn_csv: Path
) -> None:
    settings = churn_settings(churn_csv)
    outcome = train_and_register(settings, registry)
    v = outcome.version
    assert (v.name, v.version, v.aliases) == ("churn", "1", ("staging",))
    for tag in (
        "shipml.data_sha256",
        "shipml.git_commit",
        "shipml.schema_sha256",
        "shipml.fast_path",
        "shipml.manifest_sha256",
    ):
        assert v.tags[tag], tag
    assert v.tags["shipml.schema_sha256"] == outcome.result.schema.sha256()
    assert v.tags["shipml.fast_path"].startswith("verified: exact on ")
    assert v.metrics["roc_auc"] == outcome.result.holdout.metrics["roc_auc"]
    assert "cv_roc_auc_mean" in v.metrics
    assert v.params["model.n_estimators"] == "20"
    loaded = registry.load(ModelRef.parse("churn@staging"), registry_cache(churn_csv))
    for name in ("schema.json", "profile.json", "validation.json", "config.yaml", "manifest.json"):
        assert (loaded.local_dir / "shipml" / name).is_file(), name
    mlmodel = (loaded.local_dir / "model" / "MLmodel").read_text()
    assert "signature" in mlmodel and "saved_input_example_info" in mlmodel
    X = feature_frame(outcome.result.input_example, outcome.result.schema)
    np.testing.assert_array_equal(loaded.pipeline.predict_proba(X), outcome.result.pipeline.predict_proba(X))


def registry_cache(anchor: Path) -> Path:
    return anchor.parent / ".shipml" / "cache"


def test_failed_gate_registers_without_staging(registry: MlflowRegistry, churn_csv: Path) -> None:
    outcome = train_and_register(churn_settings(churn_csv, training={"gates": {"roc_auc": {"min": 0.999}}}), registry)
    assert not outcome.gate.passed
    assert outcome.version.aliases == ()
    assert any("missed by" in line for line in outcome.gate.lines)
    assert registry.history("churn") == []


def test_promote_rollback_and_history(registry: MlflowRegistry, churn_csv: Path) -> None:
    settings = churn_settings(churn_csv)
    train_and_register(settings, registry)
    train_and_register(churn_settings(churn_csv, training={"seed": 3}), registry)
    before_any_production = datetime.now(UTC)
    promote(registry, "churn", "1", "production", "first")
    after_first = datetime.now(UTC)
    promote(registry, "churn", "2", "production", "better")
    assert registry.aliases("churn") == {"production": "2", "previous": "1", "staging": "2"}
    rollback(registry, "churn", "incident 42")
    assert registry.aliases("churn")["production"] == "1"
    assert registry.aliases("churn")["previous"] == "2"
    moves = registry.history("churn")
    assert [(m.alias, m.from_version, m.to_version) for m in moves] == [
        ("staging", None, "1"),
        ("staging", "1", "2"),
        ("production", None, "1"),
        ("previous", None, "1"),
        ("production", "1", "2"),
        ("production", "2", "1"),
        ("previous", "1", "2"),
    ]
    assert moves[-1].reason == "rollback: incident 42" and moves[-1].user
    assert holder_at(moves, "production", before_any_production) is None
    assert holder_at(moves, "production", after_first) == "1"
    assert holder_at(moves, "production", datetime.now(UTC)) == "1"
    rows = compare(registry, "churn", "1", "2")
    assert any(r.key == "training.seed" and r.differs for r in rows)
    assert any(r.key == "estimator" and not r.differs for r in rows)


def test_bad_references_leave_the_registry_unchanged(registry: MlflowRegistry, churn_csv: Path) -> None:
    train_and_register(churn_settings(churn_csv), registry)
    before = (registry.aliases("churn"), registry.history("churn"))
    with pytest.raises(RegistryError, match=r"model 'churn' has no version 9 \(versions: 1\)"):
        promote(registry, "churn", "9", "production", "x")
    with pytest.raises(RegistryError, match=r"unknown model 'nope' \(registered models: churn\)"):
        promote(registry, "nope", "1", "production", "x")
    with pytest.raises(RegistryError, match="no `previous` production version"):
        rollback(registry, "churn", "x")
    with pytest.raises(RegistryError, match="--to: must be one of staging, production"):
        promote(registry, "churn", "1", "previous", "x")
    assert (registry.aliases("churn"), registry.history("churn")) == before


def test_model_reference_refuses_paths_and_urls() -> None:
    assert ModelRef.parse("churn@production") == ModelRef("churn", None, "production")
    assert ModelRef.parse("models:/churn/3") == ModelRef("churn", "3", None)
    for bad in ("file:///etc/passwd", "../churn", "http://x/y", "churn@../../x"):
        with pytest.raises(RegistryError):
            ModelRef.parse(bad)


def test_tampered_model_file_is_refused_before_unpickling(
    registry: MlflowRegistry, churn_csv: Path, workdir: Path
) -> None:
    train_and_register(churn_settings(churn_csv), registry)
    info = registry.resolve(ModelRef.parse("churn/1"))
    stored = next((workdir / "reg" / "art").rglob("model.skops"))
    stored.write_bytes(stored.read_bytes() + b"\0")
    with pytest.raises(ModelLoadError, match=r"churn/1: model/model.skops sha256 mismatch"):
        registry.load(ModelRef.parse("churn/1"), workdir / "cache")
    assert (workdir / "cache").stat().st_mode & 0o777 == 0o700
    assert info.version == "1"


def test_tampered_packed_predictor_is_refused(registry: MlflowRegistry, churn_csv: Path, workdir: Path) -> None:
    train_and_register(churn_settings(churn_csv), registry)
    stored = next((workdir / "reg" / "art").rglob(FAST_PREDICTOR_FILE))
    stored.write_bytes(stored.read_bytes() + b"\0")
    with pytest.raises(ModelLoadError, match=rf"churn/1: model/{FAST_PREDICTOR_FILE} sha256 mismatch"):
        registry.load(ModelRef.parse("churn/1"), workdir / "cache")


SERVE_WITHOUT_SKLEARN = """
import sys
from pathlib import Path
from shipml.adapters.mlflow_registry import FAST_PREDICTOR_FILE, MlflowRegistry, ModelRef
from shipml.config import RegistrySettings
from shipml.pipelines.bundle import load_bundle
registry = MlflowRegistry(RegistrySettings(uri=sys.argv[1], artifact_root=sys.argv[2]))
bundle = load_bundle(registry, ModelRef.parse("churn/1"), Path(sys.argv[3]))
out = bundle.predictor.predict(list(bundle.example))
print(bundle.predictor.name, "sklearn" in sys.modules, out.proba.tobytes().hex())
"""


def test_a_verified_version_is_served_from_its_packed_predictor_without_sklearn(
    registry: MlflowRegistry, churn_csv: Path, workdir: Path
) -> None:
    outcome = train_and_register(churn_settings(churn_csv), registry)
    args = [registry.settings.uri, str(workdir / "reg" / "art"), str(workdir / "cache")]
    run = subprocess.run([sys.executable, "-c", SERVE_WITHOUT_SKLEARN, *args], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    name, imported, proba = run.stdout.split()
    assert (name, imported) == ("fast", "False")
    X = feature_frame(outcome.result.input_example, outcome.result.schema)
    want = outcome.result.pipeline.predict_proba(X)
    assert bytes.fromhex(proba) == np.ascontiguousarray(want).tobytes()  # bit for bit
