"""The CLI end to end, as a user runs it: quickstart, predict, validate, and every bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from shipml.adapters.registry import MlflowRegistry, ModelRef
from shipml.config import RegistrySettings
from shipml.examples.churn import generate_churn
from shipml.pipelines.data import feature_frame
from shipml.pipelines.predict import load_schema
from tests.support.cli import one_error_line, shipml

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory where `shipml quickstart` has run (on 2,000 rows, for speed)."""
    root = tmp_path_factory.mktemp("project")
    result = shipml(root, "quickstart", "--rows", "2000")
    assert result.returncode == 0, result.stderr
    assert "promoted churn/1 to production" in result.stdout
    return root


def registry(root: Path) -> MlflowRegistry:
    return MlflowRegistry(
        RegistrySettings(uri=f"sqlite:///{root}/.shipml/mlflow.db", artifact_root=str(root / ".shipml/artifacts"))
    )


def test_quickstart_leaves_a_production_version(project: Path) -> None:
    assert registry(project).aliases("churn") == {"production": "1", "staging": "1"}
    listing = shipml(project, "models", "list")
    assert listing.returncode == 0 and "churn" in listing.stdout


def test_predict_gives_the_pipeline_probabilities_streaming_in_chunks(project: Path) -> None:
    generate_churn(1_000, seed=11).drop(columns=["churn"]).to_csv(project / "new.csv", index=False)
    result = shipml(
        project, "predict", "new.csv", "--model", "churn@production", "-o", "scores.parquet", "--chunk-rows", "300"
    )
    assert result.returncode == 0, result.stderr
    assert "scored 1000 rows with churn/1" in result.stdout
    scores = pq.read_table(project / "scores.parquet").to_pandas()
    assert list(scores.columns) == ["customer_id", "proba_0", "proba_1", "prediction", "model_version"]
    loaded = registry(project).load(ModelRef.parse("churn/1"), project / ".shipml" / "test-cache")
    data = pd.read_csv(project / "new.csv")
    expected = loaded.pipeline.predict_proba(feature_frame(data, load_schema(loaded)))
    np.testing.assert_array_equal(scores[["proba_0", "proba_1"]].to_numpy(), expected)
    assert (scores.customer_id == data.customer_id).all()
    assert set(scores.model_version) == {"1"}
    assert (scores.prediction == np.where(expected[:, 1] > expected[:, 0], "1", "0")).all()


def test_predict_refuses_invalid_data_and_writes_nothing(project: Path) -> None:
    df = generate_churn(200, seed=12)
    df.loc[5, "contract"] = "lifetime"
    df.to_csv(project / "bad.csv", index=False)
    result = shipml(project, "predict", "bad.csv", "-m", "churn@production", "-o", "bad-scores.csv")
    line = one_error_line(result)
    assert "contract: allowed_categories (1 rows)" in line
    assert "lifetime" in result.stdout
    assert not (project / "bad-scores.csv").exists()
    assert not list(project.glob(".bad-scores*"))


def test_validate_prints_a_table_writes_json_and_exits_1(project: Path) -> None:
    df = generate_churn(300, seed=13)
    df.loc[0:2, "age"] = 400
    df.to_csv(project / "v.csv", index=False)
    (project / "cfg.yaml").write_text((Path(__file__).parents[2] / "examples/churn/shipml.yaml").read_text())
    result = shipml(project, "validate", "v.csv", "--config", "cfg.yaml", "--json", "v.json")
    assert result.returncode == 1, result.stderr
    assert "age" in result.stdout and "max 120" in result.stdout and "400" in result.stdout
    report = json.loads((project / "v.json").read_text())
    assert report["passed"] is False
    assert {"column": "age", "rule": "max 120.0", "failing": 3, "examples": ["400.0"], "severity": "error"} in report[
        "issues"
    ]
    generate_churn(300, seed=14).drop(columns=["churn"]).to_csv(project / "fine.csv", index=False)
    ok = shipml(project, "validate", "fine.csv", "--model", "churn@production", "--json", "ok.json")
    assert ok.returncode == 0, ok.stdout + ok.stderr


CONFIG = (Path(__file__).parents[2] / "examples/churn/shipml.yaml").read_text()


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing_data", "nothing.csv: file not found"),
        ("unreadable_csv", "cannot"),
        ("bad_yaml", "invalid YAML"),
        ("unknown_estimator", "model.estimator: cannot import 'sklearn.forest'"),
        ("missing_target", "churn: missing_target"),
        ("all_null_column", "total_charges: all_null"),
        ("gate_unknown_metric", "training.gates.auc: unknown metric for a binary task"),
    ],
)
def test_train_bad_input_is_one_line_exit_2_and_registry_unchanged(
    project: Path, tmp_path: Path, case: str, expected: str
) -> None:
    before = registry(project).versions("churn")
    config, data = CONFIG, generate_churn(300, seed=3)
    data_file = tmp_path / "d.csv"
    if case == "missing_data":
        data_file = tmp_path / "nothing.csv"
    elif case == "unreadable_csv":
        data_file.write_bytes(b'a,b\n1,"2\n\x00\xff\xfe,,,\n')
    elif case == "bad_yaml":
        config = config.replace("model:\n", "model: [\n", 1)
    elif case == "unknown_estimator":
        config = config.replace("sklearn.ensemble.RandomForestClassifier", "sklearn.forest.Random")
    elif case == "missing_target":
        data = data.drop(columns=["churn"])
    elif case == "all_null_column":
        data["total_charges"] = np.nan
    elif case == "gate_unknown_metric":
        config = config.replace("roc_auc: {min: 0.75}", "auc: {min: 0.75}")
    if case not in ("missing_data", "unreadable_csv"):
        data.to_csv(data_file, index=False)
    (tmp_path / "shipml.yaml").write_text(config.replace(".shipml/data/churn.csv", str(data_file)))
    result = shipml(project, "train", "--config", str(tmp_path / "shipml.yaml"))
    assert expected in one_error_line(result)
    assert [v.version for v in registry(project).versions("churn")] == [v.version for v in before]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("models", "promote", "nope", "1"), "unknown model 'nope' (registered models: churn)"),
        (("models", "promote", "churn", "99"), "model 'churn' has no version 99"),
        (("models", "rollback", "churn"), "no `previous` production version"),
        (("predict", "new.csv", "-m", "../etc@x", "-o", "o.parquet"), "model reference '../etc@x'"),
        (("models", "show", "churn@nothing"), "has no version with alias 'nothing'"),
    ],
)
def test_registry_bad_input_is_one_line_exit_2(project: Path, args: tuple[str, ...], expected: str) -> None:
    before = registry(project).history("churn")
    assert expected in one_error_line(shipml(project, *args))
    assert registry(project).history("churn") == before


def test_init_writes_a_starter_config_that_loads(tmp_path: Path) -> None:
    assert shipml(tmp_path, "init").returncode == 0
    assert (tmp_path / "shipml.yaml").read_text().startswith("# shipml.yaml")
    assert "already exists" in one_error_line(shipml(tmp_path, "init"))


def test_schema_infer_writes_yaml_the_config_can_use(tmp_path: Path) -> None:
    generate_churn(300, seed=5).to_csv(tmp_path / "d.csv", index=False)
    result = shipml(
        tmp_path, "schema", "infer", "d.csv", "--target", "churn", "--id-column", "customer_id", "-o", "s.yaml"
    )
    assert result.returncode == 0, result.stderr
    config = CONFIG.split("  features:")[0].replace(".shipml/data/churn.csv", "d.csv") + "  schema_file: s.yaml\n"
    (tmp_path / "shipml.yaml").write_text(config)
    valid = shipml(tmp_path, "validate", "d.csv")
    assert valid.returncode == 0, valid.stdout + valid.stderr


def test_parquet_in_and_out(project: Path) -> None:
    generate_churn(700, seed=17).drop(columns=["churn"]).to_parquet(project / "new.parquet")
    result = shipml(
        project, "predict", "new.parquet", "-m", "churn@production", "-o", "scores.csv", "--chunk-rows", "256"
    )
    assert result.returncode == 0, result.stderr
    scores = pd.read_csv(project / "scores.csv")
    assert len(scores) == 700 and list(scores.columns)[-1] == "model_version"
    valid = shipml(project, "validate", "new.parquet", "--model", "churn@production", "--json", "pq.json")
    assert valid.returncode == 0, valid.stdout + valid.stderr


def test_predict_takes_a_one_row_file_whose_nullable_feature_is_null(project: Path) -> None:
    """Data-set rules (all_null, constant, duplicates) are for training data: the server takes this record too."""
    one = generate_churn(300, seed=21)
    one[one.total_charges.isna()].head(1).drop(columns=["churn"]).to_csv(project / "one.csv", index=False)
    result = shipml(project, "predict", "one.csv", "-m", "churn@production", "-o", "one-scores.parquet")
    assert result.returncode == 0, result.stdout + result.stderr
    assert pq.read_table(project / "one-scores.parquet").num_rows == 1


def test_predict_streams_integer_ids_with_a_null_in_a_later_chunk(project: Path) -> None:
    data = generate_churn(50, seed=22).drop(columns=["churn"])
    data["customer_id"] = pd.array(range(1, 51), dtype="Int64")
    data.loc[45, "customer_id"] = pd.NA
    data.to_csv(project / "ids.csv", index=False)
    for out in ("ids.parquet", "ids-out.csv"):
        result = shipml(project, "predict", "ids.csv", "-m", "churn@production", "-o", out, "--chunk-rows", "10")
        assert result.returncode == 0, result.stdout + result.stderr
    ids = pq.read_table(project / "ids.parquet").column("customer_id").to_pylist()
    assert ids == [str(i) for i in range(1, 46)] + [None] + [str(i) for i in range(47, 51)]  # as written in the file
    assert pd.read_csv(project / "ids-out.csv")["customer_id"].isna().tolist() == [False] * 45 + [True] + [False] * 4


def test_registry_uri_flag_beats_the_environment(project: Path, tmp_path: Path) -> None:
    generate_churn(100, seed=23).to_csv(project / "flag.csv", index=False)
    result = shipml(
        project,
        "validate",
        "flag.csv",
        "--model",
        "churn@production",
        "--json",
        "flag.json",
        "--registry-uri",
        f"sqlite:///{project}/.shipml/mlflow.db",
        env={"SHIPML_REGISTRY_URI": f"sqlite:///{tmp_path}/elsewhere.db"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert not (tmp_path / "elsewhere.db").exists()


def test_keys_new_prints_the_key_and_the_auth_line_that_accepts_it(tmp_path: Path) -> None:
    """The tests make their keys in-process; this is the command a user runs."""
    from shipml.server.auth import hash_key

    made = shipml(tmp_path, "keys", "new", "--name", "ops", "--role", "predict", "--role", "admin")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    line = next(line for line in made.stderr.splitlines() if "sha256" in line)
    assert line.strip() == f"- {{name: ops, sha256: {hash_key(key)}, roles: [predict, admin]}}"
    assert "Traceback" not in made.stderr and not list(tmp_path.iterdir())  # nothing written
    refused = shipml(tmp_path, "keys", "new", "--name", "x", "--role", "root")
    assert "--role: must be predict or admin, got 'root'" in one_error_line(refused)
