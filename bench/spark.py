"""make bench: batch scoring on Spark (issue 19, item 5), shipml against its two peers, in one run.

The churn model as bench/serve.py trains it (`shipml quickstart`: RandomForest, 100 trees, depth 10), Parquet
files of 1M and 5M rows, `local[2]`. Each engine runs in a fresh process, so a fresh Spark application:

- shipml: `shipml predict --engine spark` (in-process call of its use case): every row validated, then scored by
  the verified fast predictor in `mapInPandas`, written as Parquet;
- MLflow's `spark_udf` on `models:/churn/1` (labels only; the integer columns cast to double, which it demands);
- a hand-written `mapInPandas` over the pipeline's `predict_proba` (the pipeline loaded from the registry).

For each: wall time (process start to output written), start cost (process start to the application up with the
model loaded) and steady rows/s (rows over the rest). Every output is checked against the pipeline's own
`predict_proba` (labels for `spark_udf`) before a figure is printed. Then the goals as ratios, and the single
machine's `shipml predict` (columnar) at 1M rows against its 150k rows/s goal.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
BASE_ROWS = 200_000  # distinct rows; bigger files repeat them under other ids (c<copy>-<row>)
ENGINES = ("shipml", "spark_udf", "mapInPandas")


def make_data(root: Path, sizes: list[int]) -> tuple[pd.DataFrame, dict[int, Path]]:
    from shipml.examples.churn import FEATURES, generate_churn

    base = generate_churn(BASE_ROWS, seed=7)[list(FEATURES)]
    files = {}
    for size in sizes:
        path = root / f"churn-{size}.parquet"
        with pq.ParquetWriter(path, pa.Schema.from_pandas(_with_ids(base.head(1), 0), preserve_index=False)) as w:
            for copy, start in enumerate(range(0, size, BASE_ROWS)):
                w.write_table(pa.Table.from_pandas(_with_ids(base.head(size - start), copy), preserve_index=False))
        files[size] = path
    return base, files


def _with_ids(rows: pd.DataFrame, copy: int) -> pd.DataFrame:
    out = rows.copy()
    out.insert(0, "customer_id", [f"c{copy}-{i}" for i in range(len(rows))])
    return out


def check(engine: str, out: Path, rows: int, reference: np.ndarray) -> None:
    """The engine's output holds every id once, with the pipeline's probabilities (labels for spark_udf)."""
    table = pq.read_table(out).to_pandas()
    ids = table["customer_id"].astype(str)
    assert len(table) == rows and ids.is_unique, f"{engine}: {len(table)} rows, ids unique: {ids.is_unique}"
    base = ids.str.split("-", n=1).str[1].astype(int).to_numpy()
    want = reference[base]
    if engine == "spark_udf":
        labels = table["prediction"].to_numpy(dtype=np.float64)
        assert np.array_equal(labels, np.argmax(want, axis=1)), f"{engine}: labels differ from the pipeline's"
        return
    got = table[["proba_0", "proba_1"]].to_numpy()
    assert np.array_equal(got, want), f"{engine}: max |diff| {np.max(np.abs(got - want))}"


# -- one engine, in its own process --------------------------------------------------------------------------


def child(engine: str, root: Path, data: Path, out: Path, master: str) -> None:
    t0 = time.perf_counter()
    started: list[float] = []
    os.chdir(root)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    if engine == "shipml":
        from shipml.adapters.registry import ModelRef
        from shipml.cli.app import _registry
        from shipml.config import load_settings
        from shipml.pipelines.predict_spark import score_with_spark

        settings = load_settings(None)
        score_with_spark(
            _registry(settings), ModelRef.parse("churn@production"), data, out, master=master,
            cache_dir=Path(settings.home) / "cache", work_dir=Path(settings.home),
            chunk_rows=settings.predict.chunk_rows, connect_timeout_s=10, native=settings.native,
            started=lambda: started.append(time.perf_counter()),
        )  # fmt: skip
    else:
        spark = _session(master, engine)
        frame = spark.read.parquet(str(data))
        features = [c for c in frame.columns if c != "customer_id"]
        if engine == "spark_udf":
            import mlflow.pyfunc
            from pyspark.sql import functions as F

            mlflow.set_registry_uri(f"sqlite:///{root}/.shipml/mlflow.db")
            udf = mlflow.pyfunc.spark_udf(spark, "models:/churn/1", result_type="double", env_manager="local")
            started.append(time.perf_counter())
            ints = {f.name for f in frame.schema.fields if f.dataType.typeName() in ("long", "integer")}
            cast = [F.col(c).cast("double").alias(c) if c in ints else F.col(c) for c in features]
            frame.select("customer_id", udf(F.struct(*cast)).alias("prediction")).write.parquet(str(out))
        else:
            pipeline = _pipeline(root)
            started.append(time.perf_counter())

            def score(batches):  # type: ignore[no-untyped-def]
                for pdf in batches:
                    proba = pipeline.predict_proba(pdf[features])
                    yield pd.DataFrame({"customer_id": pdf["customer_id"].astype(object), "proba_0": proba[:, 0],
                                        "proba_1": proba[:, 1]})  # fmt: skip

            frame.mapInPandas(score, "customer_id string, proba_0 double, proba_1 double").write.parquet(str(out))
        spark.stop()
    done = time.perf_counter()
    print(json.dumps({"start_s": started[0] - t0, "wall_s": done - t0}))


def _session(master: str, engine: str):  # type: ignore[no-untyped-def]
    from pyspark.sql import SparkSession

    return (
        SparkSession.builder.master(master).appName(f"bench {engine}").config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false").getOrCreate()
    )  # fmt: skip


def _pipeline(root: Path):  # type: ignore[no-untyped-def]
    from shipml.adapters.registry import MlflowRegistry, ModelRef
    from shipml.config import RegistrySettings

    registry = MlflowRegistry(RegistrySettings(uri=f"sqlite:///{root}/.shipml/mlflow.db"))
    return registry.load(ModelRef.parse("churn/1"), root / ".shipml" / "bench-cache").pipeline


# -- the run ------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1000000,5000000", help="rows per file, comma-separated")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--child", choices=ENGINES, help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, Path(args.root), Path(args.data), Path(args.out), args.master)
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    root = Path(tempfile.mkdtemp(prefix="shipml-bench-spark-"))
    print(f"# working in {root.name}; training the reference model (RandomForest 100 trees, depth 10)")
    subprocess.run([str(BIN / "shipml"), "quickstart"], cwd=root, capture_output=True, text=True, check=True)
    base, files = make_data(root, sizes)
    sys.path.insert(0, str(REPO / "src"))
    from shipml.adapters.registry import MlflowRegistry, ModelRef
    from shipml.config import RegistrySettings
    from shipml.pipelines.data import feature_frame
    from shipml.pipelines.predict import load_schema

    loaded = MlflowRegistry(RegistrySettings(uri=f"sqlite:///{root}/.shipml/mlflow.db")).load(
        ModelRef.parse("churn/1"), root / ".shipml" / "bench-cache"
    )
    reference = loaded.pipeline.predict_proba(feature_frame(base, load_schema(loaded)))
    results: dict[tuple[str, int], dict[str, float]] = {}
    for size in sizes:
        for engine in ENGINES:
            out = root / f"out-{engine}-{size}"
            proc = subprocess.run(
                [sys.executable, __file__, "--child", engine, "--root", str(root), "--data", str(files[size]),
                 "--out", str(out), "--master", args.master],
                capture_output=True, text=True,
            )  # fmt: skip
            if proc.returncode != 0:
                sys.exit(f"{engine} at {size} rows failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
            figures = json.loads(proc.stdout.strip().splitlines()[-1])
            check(engine, out, size, reference)
            figures["steady"] = size / (figures["wall_s"] - figures["start_s"])
            results[(engine, size)] = figures
            print(
                f"{engine:<12} {size:>9,} rows  wall {figures['wall_s']:7.1f} s  start {figures['start_s']:5.1f} s  "
                f"steady {figures['steady']:>9,.0f} rows/s  (output checked)",
                flush=True,
            )
    local = _single_machine(root, files, sizes)
    _goals(results, sizes, local)


def _single_machine(root: Path, files: dict[int, Path], sizes: list[int]) -> tuple[int, float] | None:
    """`shipml predict` on one machine (columnar, validation included), wall time of the command, at 1M rows."""
    size = 1_000_000 if 1_000_000 in files else min(sizes)
    started = time.perf_counter()
    subprocess.run(
        [str(BIN / "shipml"), "predict", str(files[size]), "-m", "churn@production", "-o", "local.parquet"],
        cwd=root, capture_output=True, text=True, check=True,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    table = pq.read_table(root / "local.parquet", columns=["customer_id"])
    assert table.num_rows == size
    return size, seconds


def _goals(results: dict[tuple[str, int], dict[str, float]], sizes: list[int], local: tuple[int, float] | None) -> None:
    big, small = max(sizes), min(sizes)
    ours, udf, hand = (results[(e, big)]["steady"] for e in ENGINES)
    print(f"\n# goals (local[2], one run): at {big:,} rows shipml's steady rows/s")
    print(f"  vs spark_udf:    {ours / udf:5.2f}x (goal >= 2x)   {'MET' if ours >= 2 * udf else 'MISSED'}")
    print(f"  vs mapInPandas:  {ours / hand:5.2f}x (goal >= 1x)   {'MET' if ours >= hand else 'MISSED'}")
    wall, udf_wall = results[("shipml", small)]["wall_s"], results[("spark_udf", small)]["wall_s"]
    print(
        f"  at {small:,} rows shipml's wall time is {wall / udf_wall:.2f} of spark_udf's (goal <= 0.33)   "
        f"{'MET' if wall <= udf_wall / 3 else 'MISSED'}"
    )
    if local is not None:
        rows, seconds = local
        rate = rows / seconds
        print(
            f"  shipml predict on one machine (columnar, validated): {rows:,} rows in {seconds:.1f} s, {rate:,.0f} "
            f"rows/s (goal >= 150,000)   {'MET' if rate >= 150_000 else 'MISSED'}"
        )


if __name__ == "__main__":
    main()
