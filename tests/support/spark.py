"""Spark for the scale lane's tests: the components checked (java, pyspark), a project with Parquet data, and a
standalone master and worker on loopback started from the pyspark package (``spark-class``)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from shipml.examples.churn import generate_churn
from tests.support.cli import shipml
from tests.support.components import missing
from tests.support.server import free_port

README = Path(__file__).parents[2] / "README.md"
# Spark in the tests talks on loopback only: the user's environment names the address, as a user would
LOOPBACK = {"SPARK_LOCAL_IP": "127.0.0.1"}


def spark_home() -> Path:
    """The pyspark package's directory (its bin/spark-class, jars); a missing component otherwise."""
    if shutil.which("java") is None:
        missing("java is not installed: make system-deps installs openjdk-17-jre-headless")
    try:
        import pyspark
    except ImportError:
        missing("pyspark is not installed: make test-scale installs the spark extra (pip install -e '.[spark]')")
    return Path(pyspark.__file__).parent


def readme_commands() -> list[str]:
    """The `shipml predict ... --engine spark` lines of README.md's "Batch scoring on Spark", as typed."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### Batch scoring on Spark") :]
    block = section[section.index("```bash") + len("```bash") : section.index("```", section.index("```bash") + 7)]
    return [line.strip() for line in block.splitlines() if line.strip().startswith("shipml predict")]


def churn_rows(rows: int, seed: int) -> pd.DataFrame:
    """Churn records to score (no target), ids unique, some features missing."""
    df = generate_churn(rows, seed=seed).drop(columns=["churn"])
    df["customer_id"] = [f"c{seed}-{i}" for i in range(rows)]
    return df


def write_parquet_dir(df: pd.DataFrame, directory: Path, files: int) -> None:
    """``df`` as ``files`` Parquet files in ``directory`` (Spark reads a directory of parts)."""
    directory.mkdir(parents=True, exist_ok=True)
    for i, part in enumerate(np.array_split(np.arange(len(df)), files)):
        pq.write_table(pa.Table.from_pandas(df.iloc[part], preserve_index=False), directory / f"part-{i:03d}.parquet")


def project(root: Path) -> Path:
    """A directory where `shipml quickstart` trained and promoted churn/1 (2,000 rows, for speed)."""
    result = shipml(root, "quickstart", "--rows", "2000")
    assert result.returncode == 0, result.stderr
    return root


def read_scores(path: Path) -> pd.DataFrame:
    """An output (a Parquet file or Spark's directory of parts) sorted by id."""
    table = pq.read_table(path).to_pandas()
    return table.sort_values("customer_id", kind="stable").reset_index(drop=True)


@dataclass
class Standalone:
    master: str
    master_proc: subprocess.Popen[bytes]
    worker_proc: subprocess.Popen[bytes]
    logs: Path

    def executors(self) -> list[int]:
        """The pids of this worker's executor JVMs (CoarseGrainedExecutorBackend, run in the worker's directory)."""
        out = subprocess.run(["ps", "-ww", "-eo", "pid=,args="], capture_output=True, text=True, check=True).stdout
        pids = []
        for line in out.splitlines():
            pid, args = line.strip().split(None, 1)
            if "CoarseGrainedExecutorBackend" not in args:
                continue
            try:
                cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
            except OSError:
                continue
            if (self.logs / "work") in cwd.parents:
                pids.append(int(pid))
        return pids


@contextmanager
def standalone(tmp: Path) -> Iterator[Standalone]:
    """A standalone master and one worker (2 cores) on 127.0.0.1, from the pyspark package; stopped after."""
    spark_class = str(spark_home() / "bin" / "spark-class")
    env = {**os.environ, **LOOPBACK, "SPARK_LOG_DIR": str(tmp), "SPARK_WORKER_DIR": str(tmp / "work")}
    port = free_port()
    master = f"spark://127.0.0.1:{port}"
    master_log = (tmp / "master.log").open("wb")
    worker_log = (tmp / "worker.log").open("wb")
    m = subprocess.Popen(
        [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
         "--webui-port", str(free_port())],
        env=env, stdout=master_log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    w = subprocess.Popen(
        [spark_class, "org.apache.spark.deploy.worker.Worker", master, "--host", "127.0.0.1", "--cores", "2",
         "--memory", "2g", "--webui-port", str(free_port()), "--work-dir", str(tmp / "work")],
        env=env, stdout=worker_log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    cluster = Standalone(master, m, w, tmp)
    try:
        deadline = time.monotonic() + 90
        while not re.search(r"Successfully registered with master", (tmp / "worker.log").read_text(errors="replace")):
            assert m.poll() is None and w.poll() is None, (tmp / "master.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the worker did not register with the master within 90 s"
            time.sleep(0.5)
        yield cluster
    finally:
        for proc in (w, m):
            with_group(proc, signal.SIGTERM)
        for proc in (w, m):
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                with_group(proc, signal.SIGKILL)
                proc.wait()
        master_log.close()
        worker_log.close()


def with_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    """``sig`` to the process group we started (the JVM and what it forked: executors, Python workers)."""
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
