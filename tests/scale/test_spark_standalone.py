"""`shipml predict --engine spark` on a standalone cluster (a master and a worker on loopback, from the pyspark
package): README.md's cluster line as typed (the master's address put in), with the executor SIGKILLed while it
scores: the worker starts another, the lost tasks run again, and every id is in the output exactly once with the
probabilities one machine gives (issue 19, item 4)."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tests.support.cli import shipml
from tests.support.launcher import SHIPML
from tests.support.spark import LOOPBACK, churn_rows, read_scores, readme_commands, standalone, write_parquet_dir

ROWS, FILES = 120_000, 24  # a task per file: some are committed before the kill, others run after it


def test_readme_cluster_line_survives_a_killed_executor(spark_project: Path, tmp_path: Path) -> None:
    root = spark_project / "cluster"
    root.mkdir()
    for name in (".shipml", "shipml.yaml"):
        (root / name).symlink_to(spark_project / name)
    df = churn_rows(ROWS, seed=41)
    write_parquet_dir(df, root / "data", FILES)
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), root / "all.parquet")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("SPARK_", "PYSPARK_", "SHIPML_"))}, **LOOPBACK}
    line = readme_commands()[1]
    assert "--master spark://spark-master:7077" in line
    with standalone(tmp_path) as cluster:
        argv = shlex.split(line.replace("spark://spark-master:7077", cluster.master))[1:]
        started = time.monotonic()
        proc = subprocess.Popen(
            [SHIPML, *argv], cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        killed = _kill_an_executor_mid_job(root, cluster, proc)
        stdout, stderr = proc.communicate(timeout=300)
        seconds = time.monotonic() - started
    assert proc.returncode == 0, stdout + stderr
    assert f"scored {ROWS} rows with churn/1 into scores" in stdout
    log = (spark_project / ".shipml" / "spark.log").read_text(errors="replace")
    assert "Lost executor" in log or "ExecutorLostFailure" in log, "the kill did not reach the job"
    print(f"FIGURE spark standalone: {ROWS} rows in {seconds:.1f} s wall, executor {killed} killed mid-job")
    local = shipml(root, "predict", "all.parquet", "-m", "churn@production", "-o", "local.parquet", env=env)
    assert local.returncode == 0, local.stderr
    spark, one = read_scores(root / "scores"), read_scores(root / "local.parquet")
    assert spark.customer_id.is_unique and len(spark) == ROWS  # no id missing, none doubled
    pd.testing.assert_frame_equal(spark, one, check_exact=True)


def _kill_an_executor_mid_job(root: Path, cluster: object, proc: subprocess.Popen[str]) -> int:
    """SIGKILL the executor once the scoring job writes its first part (under ``_temporary`` of the staged
    output, where Spark's committer keeps each task attempt's files until the job commits); its pid."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the job ended before an executor could be killed"
        writing = [p for staged in root.glob(".scores.*.tmp") for p in staged.rglob("part-*")]
        executors = cluster.executors()  # type: ignore[attr-defined]
        if writing and executors:
            os.kill(executors[0], signal.SIGKILL)
            return int(executors[0])
        time.sleep(0.02)
    raise AssertionError("the scoring job wrote no part within 240 s")
