"""The registry on the embedded store (SQLite + local artifacts): register, gates, aliases, history, integrity."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import requests

from shipml.adapters.registry import FAST_PREDICTOR_FILE, HISTORY_PREFIX, AliasMove, MlflowRegistry, ModelRef
from shipml.config import RegistrySettings
from shipml.errors import ModelLoadError, RegistryError
from shipml.pipelines.data import feature_frame
from shipml.pipelines.promote import compare, holder_at, promote, rollback
from tests.support.cli import one_error_line, shipml
from tests.support.project import churn_settings
from tests.support.server import start_server
from tests.support.trained import new_registry_db, train_and_register_once

pytestmark = pytest.mark.integration


@pytest.fixture
def registry(workdir: Path) -> MlflowRegistry:
    uri = new_registry_db(workdir / "reg" / "mlflow.db")  # empty and migrated, this test's own
    return MlflowRegistry(RegistrySettings(uri=uri, artifact_root=str(workdir / "reg" / "art")))


def test_train_registers_a_version_with_lineage_artifacts_and_staging(
    registry: MlflowRegistry, churn_csv: Path
) -> None:
    settings = churn_settings(churn_csv)
    outcome = train_and_register_once(settings, registry)
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
    outcome = train_and_register_once(
        churn_settings(churn_csv, training={"gates": {"roc_auc": {"min": 0.999}}}), registry
    )
    assert not outcome.gate.passed
    assert outcome.version.aliases == ()
    assert any("missed by" in line for line in outcome.gate.lines)
    assert registry.history("churn") == []


def test_promote_rollback_and_history(registry: MlflowRegistry, churn_csv: Path) -> None:
    settings = churn_settings(churn_csv)
    train_and_register_once(settings, registry)
    train_and_register_once(churn_settings(churn_csv, training={"seed": 3}), registry)
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
        # production first, then `previous` takes what it replaced: never both on one version
        ("production", "1", "2"),
        ("previous", None, "1"),
        # a rollback clears `previous` before production moves, for the same reason
        ("previous", "1", None),
        ("production", "2", "1"),
        ("previous", None, "2"),
    ]
    assert moves[-1].reason == "rollback: incident 42" and moves[-1].user
    assert holder_at(moves, "production", before_any_production) is None
    assert holder_at(moves, "production", after_first) == "1"
    assert holder_at(moves, "production", datetime.now(UTC)) == "1"
    rows = compare(registry, "churn", "1", "2")
    assert any(r.key == "training.seed" and r.differs for r in rows)
    assert any(r.key == "estimator" and not r.differs for r in rows)


def test_bad_references_leave_the_registry_unchanged(registry: MlflowRegistry, churn_csv: Path) -> None:
    train_and_register_once(churn_settings(churn_csv), registry)
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
    train_and_register_once(churn_settings(churn_csv), registry)
    info = registry.resolve(ModelRef.parse("churn/1"))
    stored = next((workdir / "reg" / "art").rglob("model.skops"))
    stored.write_bytes(stored.read_bytes() + b"\0")
    with pytest.raises(ModelLoadError, match=r"churn/1: model/model.skops sha256 mismatch"):
        registry.load(ModelRef.parse("churn/1"), workdir / "cache")
    assert (workdir / "cache").stat().st_mode & 0o777 == 0o700
    assert info.version == "1"


def test_tampered_packed_predictor_is_refused(registry: MlflowRegistry, churn_csv: Path, workdir: Path) -> None:
    train_and_register_once(churn_settings(churn_csv), registry)
    stored = next((workdir / "reg" / "art").rglob(FAST_PREDICTOR_FILE))
    stored.write_bytes(stored.read_bytes() + b"\0")
    with pytest.raises(ModelLoadError, match=rf"churn/1: model/{FAST_PREDICTOR_FILE} sha256 mismatch"):
        registry.load(ModelRef.parse("churn/1"), workdir / "cache")


SERVE_WITHOUT_SKLEARN = """
import sys
from pathlib import Path
from shipml.adapters.registry import FAST_PREDICTOR_FILE, MlflowRegistry, ModelRef
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
    outcome = train_and_register_once(churn_settings(churn_csv), registry)
    args = [registry.settings.uri, str(workdir / "reg" / "art"), str(workdir / "cache")]
    run = subprocess.run([sys.executable, "-c", SERVE_WITHOUT_SKLEARN, *args], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    name, imported, proba = run.stdout.split()
    assert (name, imported) == ("fast", "False")
    X = feature_frame(outcome.result.input_example, outcome.result.schema)
    want = outcome.result.pipeline.predict_proba(X)
    assert bytes.fromhex(proba) == np.ascontiguousarray(want).tobytes()  # bit for bit


# -- L2: alias moves under concurrency ------------------------------------------------------------------


def test_concurrent_promotions_all_reach_the_history_and_previous_is_settled(
    registry: MlflowRegistry, churn_csv: Path
) -> None:
    v1 = train_and_register_once(churn_settings(churn_csv), registry).version
    versions = ["2", "3", "4", "5"]
    for _ in versions:  # more versions of the same run: registering is not what is under test
        registry.client.create_model_version("churn", v1.source, run_id=v1.run_id, tags=v1.tags)
    barrier = threading.Barrier(len(versions))
    errors: dict[str, str] = {}

    def promote_at_once(version: str) -> None:
        barrier.wait()
        try:
            promote(registry, "churn", version, "production", f"thread {version}")
        except RegistryError as exc:
            errors[version] = exc.message

    threads = [threading.Thread(target=promote_at_once, args=(v,)) for v in versions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    moves = registry.history("churn")
    production_moves = [m for m in moves if m.alias == "production"]
    assert sorted(m.to_version for m in production_moves if m.to_version) == versions  # none lost
    aliases = registry.aliases("churn")
    held = [m.to_version for m in production_moves]
    # each move is stamped just after its write returned, so the last two can be recorded in the other order
    assert aliases["production"] in held[-2:]
    # previous: a version that held production before the one holding it now. Which one, of four written at once,
    # depends on the order the promoters settled it in (their stamps can be recorded out of order, as above), so
    # the test asks only that it is one that really held production, and not the current one.
    assert aliases.get("previous") in set(held) - {aliases["production"]}
    # whoever was overtaken was told so (and by nothing else); the one that stayed was not
    assert aliases["production"] not in errors
    for version, message in errors.items():
        assert re.match(
            rf"churn@production: moved to \d by a concurrent change while this command moved it to {version};", message
        )
    tags = registry.client.get_registered_model("churn").tags
    assert len([k for k in tags if k.startswith(HISTORY_PREFIX)]) == len(moves)


def test_history_written_by_an_older_shipml_is_still_read_in_order(registry: MlflowRegistry, churn_csv: Path) -> None:
    old = AliasMove("2020-01-01T00:00:00.000+00:00", "old", "production", None, "1", "before the upgrade")
    train_and_register_once(churn_settings(churn_csv), registry)  # the staging move, under a new key
    registry.client.set_registered_model_tag("churn", f"{HISTORY_PREFIX}000001", json.dumps(old.__dict__))
    promote(registry, "churn", "1", "production", "after the upgrade")
    moves = registry.history("churn")
    assert [(m.alias, m.reason.split(":")[0]) for m in moves] == [
        ("production", "before the upgrade"),
        ("staging", "gates passed"),
        ("production", "after the upgrade"),
    ]
    assert registry.history("churn")[0] == old
    keys = sorted(k for k in registry.client.get_registered_model("churn").tags if k.startswith(HISTORY_PREFIX))
    assert all(re.fullmatch(r"shipml\.history\.\d{20}-[0-9a-f]{8}", k) for k in keys[1:]), keys


# -- serve with no shipml.yaml ----------------------------------------------------------------------------


def _registered_in_project(workdir: Path, churn_csv: Path) -> MlflowRegistry:
    """The embedded store where `shipml` looks with no config (.shipml/ in the current directory)."""
    home = workdir / ".shipml"  # absolute: MLflow keeps one engine per URI string, whatever the cwd
    uri = new_registry_db(home / "mlflow.db")
    project = MlflowRegistry(RegistrySettings(uri=uri, artifact_root=str(home / "artifacts")))
    train_and_register_once(churn_settings(churn_csv), project)
    return project


def test_serve_without_a_config_serves_the_only_model_in_production(workdir: Path, churn_csv: Path) -> None:
    project = _registered_in_project(workdir, churn_csv)
    none = shipml(workdir, "serve", "--port", "1")
    assert one_error_line(none) == (
        "error: serve.model: not set, and no registered model has a production alias; "
        "choose one with --model NAME@ALIAS (or serve.model in shipml.yaml)"
    )
    promote(project, "churn", "1", "production", "test")
    assert not (workdir / "shipml.yaml").exists()
    server = start_server(workdir)  # no shipml.yaml, no keys: the first run after `make quickstart`
    try:
        model = requests.get(f"{server.url}/model", timeout=10).json()
        assert (model["name"], model["version"]) == ("churn", "1")
    finally:
        assert server.stop() == 0
    log = server.log.read_text()
    assert "no shipml.yaml: serving churn@production, the only model with a production alias" in log
    assert "no shipml.yaml and no API keys: authentication is off, and only this machine can connect" in log
    # anywhere else than loopback, keys stay required
    exposed = shipml(workdir, "serve", "--host", "0.0.0.0", "--port", "1")  # noqa: S104 - refused before binding
    assert "auth.keys: no API keys configured" in one_error_line(exposed)


def test_serve_without_a_config_refuses_to_guess_between_models_in_production(workdir: Path, churn_csv: Path) -> None:
    project = _registered_in_project(workdir, churn_csv)
    promote(project, "churn", "1", "production", "test")
    v1 = project.get_version("churn", "1")
    project.client.create_registered_model("attrition")
    project.client.create_model_version("attrition", v1.source, run_id=v1.run_id, tags=v1.tags)
    promote(project, "attrition", "1", "production", "test")
    assert one_error_line(shipml(workdir, "serve", "--port", "1")) == (
        "error: serve.model: not set, and 2 models have a production alias (attrition@production, "
        "churn@production); choose one with --model NAME@ALIAS (or serve.model in shipml.yaml)"
    )


@pytest.mark.parametrize("command", ["promote", "rollback"])
def test_a_failure_between_alias_writes_never_leaves_previous_on_production(
    registry: MlflowRegistry, churn_csv: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    v1 = train_and_register_once(churn_settings(churn_csv), registry).version
    registry.client.create_model_version("churn", v1.source, run_id=v1.run_id, tags=v1.tags)
    promote(registry, "churn", "1", "production", "first")
    if command == "rollback":
        promote(registry, "churn", "2", "production", "second")
    real, calls = registry.move_alias, []

    def second_write_fails(name: str, alias: str, version: str | None, reason: str) -> AliasMove:
        calls.append(alias)
        if len(calls) == 2:
            raise RegistryError(f"moving {name}@{alias}: registry unreachable")
        return real(name, alias, version, reason)

    monkeypatch.setattr(registry, "move_alias", second_write_fails)
    with pytest.raises(RegistryError, match="registry unreachable"):
        if command == "promote":
            promote(registry, "churn", "2", "production", "second")
        else:
            rollback(registry, "churn", "back")
    aliases = registry.aliases("churn")
    assert aliases.get("previous") != aliases["production"], aliases


def test_an_alias_set_outside_shipml_is_what_previous_takes(registry: MlflowRegistry, churn_csv: Path) -> None:
    v1 = train_and_register_once(churn_settings(churn_csv), registry).version
    for _ in range(2):
        registry.client.create_model_version("churn", v1.source, run_id=v1.run_id, tags=v1.tags)
    promote(registry, "churn", "1", "production", "first")
    registry.client.set_registered_model_alias("churn", "production", "2")  # e.g. in MLflow's UI: no history
    promote(registry, "churn", "3", "production", "third")
    assert registry.aliases("churn") == {"staging": "1", "production": "3", "previous": "2"}
