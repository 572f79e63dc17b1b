"""`shipml predict --engine spark` at local[2] (issue 19, item 4): README.md's line as typed, the same output as
one machine's to the last bit, invalid rows, a model file that differs on the executors, an unreachable master;
and pyspark kept out of every other command. Each Spark run is one `shipml` process (one JVM start)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.support.cli import one_error_line, shipml
from tests.support.server import free_port
from tests.support.spark import LOOPBACK, churn_rows, read_scores, readme_commands, spark_home, write_parquet_dir

ROWS = 12_000


@pytest.fixture(scope="module")
def root(spark_project: Path) -> Path:
    """The project with README's `data/` (3 Parquet files) and the same rows as one file, `all.parquet`."""
    spark_home()
    df = churn_rows(ROWS, seed=31)
    df.loc[::97, "total_charges"] = None  # nullable: missing values reach the predictor
    write_parquet_dir(df, spark_project / "data", files=3)
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), spark_project / "all.parquet")
    return spark_project


def env() -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith(("SPARK_", "PYSPARK_"))}, **LOOPBACK}


def test_readme_line_scores_as_one_machine_does(root: Path) -> None:
    line = readme_commands()[0]
    assert "--master 'local[2]'" in line
    started = time.monotonic()
    result = shipml(root, *shlex.split(line)[1:], env=env(), fresh=True)
    seconds = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"scored {ROWS} rows with churn/1 into scores" in result.stdout
    print(f"FIGURE spark local[2]: {ROWS} rows in {seconds:.1f} s wall (JVM start included)")
    local = shipml(root, "predict", "all.parquet", "-m", "churn@production", "-o", "local.parquet", env=env())
    assert local.returncode == 0, local.stderr
    spark, one = read_scores(root / "scores"), read_scores(root / "local.parquet")
    assert (
        list(spark.columns) == list(one.columns) == ["customer_id", "proba_0", "proba_1", "prediction", "model_version"]
    )
    assert spark.customer_id.is_unique and len(spark) == ROWS
    pd.testing.assert_frame_equal(spark, one, check_exact=True)  # probabilities bit for bit, same types
    assert not list(root.glob(".scores*"))


def test_invalid_rows_write_nothing_and_give_the_same_report(root: Path) -> None:
    bad = churn_rows(4_000, seed=32)
    bad.loc[7, "contract"] = "lifetime"
    bad.loc[[3, 2_500], "age"] = 400
    pq.write_table(pa.Table.from_pandas(bad, preserve_index=False), root / "bad.parquet")
    spark = shipml(
        root, "predict", "bad.parquet", "-m", "churn@production", "-o", "bad-scores", "--engine", "spark",
        "--master", "local[2]", "--chunk-rows", "1000", env=env(), fresh=True,
    )  # fmt: skip
    local = shipml(root, "predict", "bad.parquet", "-m", "churn@production", "-o", "bad.csv", env=env())
    assert one_error_line(spark) == one_error_line(local)
    assert "contract: allowed_categories (1 rows)" in one_error_line(spark)
    assert spark.stdout == local.stdout  # the report's table: rows, rules, counts, examples
    assert not (root / "bad-scores").exists() and not list(root.glob(".bad-scores*"))


TAMPER = """
import sys, tarfile
from pathlib import Path
import shipml.pipelines.predict_spark as job

honest = job.pack_model

def tampered(loaded, into):
    # the copy the executors get differs from the files the driver verified: one byte of the packed predictor
    archive = honest(loaded, into)
    unpacked = Path(into) / "unpacked"
    with tarfile.open(archive) as tar:
        tar.extractall(unpacked, filter="data")
    target = unpacked / "model" / "shipml_fast.npz"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 1
    target.write_bytes(bytes(data))
    with tarfile.open(archive, "w") as tar:
        for sub in ("model", "shipml"):
            tar.add(unpacked / sub, arcname=sub)
    return archive

job.pack_model = tampered
from shipml.cli import main
sys.argv = ["shipml", *sys.argv[1:]]
main()
"""


def test_a_model_file_that_differs_on_an_executor_is_one_line(root: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", TAMPER, "predict", "all.parquet", "-m", "churn@production", "-o", "tampered",
         "--engine", "spark", "--master", "local[2]"],
        cwd=root, env=env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    line = one_error_line(result)
    assert line.startswith("error: churn/1: model/shipml_fast.npz sha256 mismatch: registered "), line
    assert not (root / "tampered").exists() and not list(root.glob(".tampered*"))


def test_an_unreachable_master_is_one_line_within_30_seconds(root: Path) -> None:
    master = f"spark://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    result = shipml(
        root, "predict", "all.parquet", "-m", "churn@production", "-o", "nowhere", "--engine", "spark",
        "--master", master, env=env(), fresh=True, timeout=30,
    )  # fmt: skip
    print(f"FIGURE spark unreachable master: exit {result.returncode} after {time.monotonic() - started:.1f} s")
    line = one_error_line(result)
    assert line.startswith(f"error: --master {master}: no Spark master answers"), line
    assert not (root / "nowhere").exists()


OTHER_COMMANDS = """
import os, sys
from shipml.cli import main
for argv in (
    ["validate", "all.parquet", "--model", "churn@production"],
    ["predict", "all.parquet", "-m", "churn@production", "-o", "others.parquet"],
    ["models", "list"],
):
    sys.argv = ["shipml", *argv]
    try:
        main()
    except SystemExit as exc:
        assert exc.code in (0, None), (argv, exc.code)
import shipml.server.app
print("PYSPARK", sorted(m for m in sys.modules if m == "pyspark" or m.startswith("pyspark.")))
print("SPARK_LOCAL_IP", os.environ.get("SPARK_LOCAL_IP"))
import shipml.pipelines.predict_spark, pyspark.sql  # the Spark command's own imports pin nothing either
print("SPARK_LOCAL_IP", os.environ.get("SPARK_LOCAL_IP"))
"""


def test_other_commands_leave_pyspark_out_and_the_driver_address_free(root: Path) -> None:
    clean = {k: v for k, v in env().items() if k not in ("SPARK_LOCAL_IP", "PYARROW_IGNORE_TIMEZONE")}
    result = subprocess.run(
        [sys.executable, "-c", OTHER_COMMANDS], cwd=root, env=clean, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith(("PYSPARK", "SPARK_LOCAL_IP"))]
    assert lines == ["PYSPARK []", "SPARK_LOCAL_IP None", "SPARK_LOCAL_IP None"], result.stdout
    assert "pyspark" not in result.stderr.lower()
