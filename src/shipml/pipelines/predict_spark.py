"""`shipml predict --engine spark`: a Parquet file or directory scored on a Spark cluster, all or nothing.

The same use case as ``pipelines/predict.py``, spread over executors, in one pass over the data: the driver
loads and verifies the version (``load_bundle``: the registry's manifest); each executor gets the version's files
as one archive (``SparkContext.addFile``), checks them against the manifest the driver verified (a file that
differs fails the job with the executor's one line) and builds the predictor as the driver did
(``bundle_from_loaded``); then in ``mapInPandas`` each batch is checked by ``validate_chunk`` and, when it passed,
scored by ``score_chunk``, the very functions one machine uses. Spark writes the scores and each batch's report
apart (``partitionBy``) into a directory beside ``OUT`` through its committer (a task retried on a lost executor
commits once); the driver merges the reports as one machine merges its chunks (invalid data: the same report,
nothing at ``OUT``), else renames the scores to ``OUT``.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tarfile
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from shipml.adapters.native import KernelLoader
from shipml.adapters.registry import LoadedModel, MlflowRegistry, ModelRef, VersionInfo, open_copy
from shipml.adapters.registry.integrity import COVERED
from shipml.adapters.spark import job_error, spark_session
from shipml.config import NativeSettings
from shipml.core.validation import ValidationIssue
from shipml.errors import DataLoadError
from shipml.pipelines.bundle import ModelBundle, bundle_from_loaded, load_bundle
from shipml.pipelines.predict import MergedReport, ScoreSummary, score_chunk, validate_chunk

# The job writes two partitions of the staged output: SCORES (the output, renamed into place) and REPORT (each
# batch's validation report as JSON in the model_version column, read back and merged by the driver).
PART, SCORES, REPORT = "_shipml_part", "scores", "report"
REPORT_COLUMN = "model_version"


@dataclass(frozen=True)
class Shipment:
    """What every task gets, pickled with it: the version, the name of its files' archive, how to build the
    predictor. The archive itself travels through Spark's file server, fetched once per executor."""

    info: VersionInfo
    archive: str
    fast_path: bool
    native: NativeSettings


def score_with_spark(
    registry: MlflowRegistry,
    ref: ModelRef,
    data: Path,
    output: Path,
    *,
    master: str,
    cache_dir: Path,
    work_dir: Path,
    chunk_rows: int,
    connect_timeout_s: float,
    native: NativeSettings,
    fast_path: bool = True,
    started: Callable[[], None] | None = None,
) -> ScoreSummary:
    """Validate every row of ``data`` (Parquet: a file or a directory) against the version's schema, then score
    it into the directory ``output``; nothing is at ``output`` unless the whole job succeeded. ``started`` is
    called once the Spark application is up (the bench splits its start cost from the job with it)."""
    if not data.exists():
        raise DataLoadError(f"{data}: file not found")
    if output.resolve() == data.resolve():
        raise DataLoadError(f"{output}: output would overwrite the input")
    if not output.parent.is_dir():
        raise DataLoadError(f"{output}: directory {output.parent} does not exist")
    bundle = load_bundle(registry, ref, cache_dir, fast_path=fast_path, kernels=KernelLoader(native))
    log_file = work_dir / "spark.log"
    conf = {
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(chunk_rows),
        # the two partitions written side by side as rows come, not sorted by partition first: each task's
        # scores keep the input's order (and no sort is paid for)
        "spark.sql.optimizer.plannedWrite.enabled": "false",
        "spark.sql.maxConcurrentOutputFileWriters": "2",
    }
    with tempfile.TemporaryDirectory(prefix="shipml-spark-", dir=work_dir) as tmp:
        archive = pack_model(bundle.loaded, Path(tmp))
        staged = output.parent / f".{output.name}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            with spark_session(master, f"shipml predict {ref}", log_file, connect_timeout_s=connect_timeout_s,
                               conf=conf) as spark:  # fmt: skip
                if started is not None:
                    started()
                shipment = Shipment(bundle.info, archive.name, fast_path, native)
                rows = _run(spark, bundle, data, staged, archive, shipment, log_file)
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)  # a failed job leaves nothing, not even its parts
            raise
    _replace(staged / f"{PART}={SCORES}", output)
    shutil.rmtree(staged, ignore_errors=True)
    return ScoreSummary(bundle.info.name, bundle.info.version, rows, output)


def _run(
    spark: Any, bundle: ModelBundle, data: Path, staged: Path, archive: Path, shipment: Shipment, log_file: Path
) -> int:
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException

    schema, source = bundle.schema, str(data)
    try:
        frame = spark.read.parquet(str(data.resolve()))
        ids = [c for c in schema.id_columns if c in frame.columns]
        spark.sparkContext.addFile(str(archive))
        out_schema = f"{_output_schema(frame.schema, ids, bundle)}, `{PART}` string"
        job = functools.partial(_check_and_score, shipment=shipment, source=source, ids=ids)
        # one pass: each batch's report rows and (when it passed) its scores, written apart by PART
        frame.mapInPandas(job, out_schema).write.partitionBy(PART).parquet(str(staged.resolve()))
    except (PySparkException, Py4JJavaError) as exc:
        raise job_error(exc, log_file) from None
    merged = MergedReport(source)
    for file in sorted((staged / f"{PART}={REPORT}").glob("*.parquet")):  # part-00000...: the batches' order
        for text in pq.read_table(file, columns=[REPORT_COLUMN]).column(REPORT_COLUMN).to_pylist():
            _merge(merged, json.loads(text))
    merged.check()  # DataValidationError with the same report as one machine's: nothing is written
    if merged.rows == 0:
        raise DataLoadError(f"{data}: no rows to score")
    return merged.rows


def pack_model(loaded: LoadedModel, into: Path) -> Path:
    """The verified copy's files (what the manifest covers) as one archive for the executors."""
    archive = into / f"shipml-model-{loaded.info.name}-{loaded.info.version}-{uuid.uuid4().hex[:8]}.tar"
    with tarfile.open(archive, "w") as tar:
        for sub in COVERED:
            tar.add(loaded.local_dir / sub, arcname=sub)
    return archive


def _replace(staged: Path, output: Path) -> None:
    """``staged`` becomes ``output`` in one rename; an older output (file or directory) goes once it has."""
    old = None
    if output.exists() or output.is_symlink():
        old = output.parent / f".{output.name}.{uuid.uuid4().hex[:8]}.old"
        output.rename(old)
    os.replace(staged, output)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


# -- what runs on the executors -------------------------------------------------------------------------------


def _check_and_score(
    batches: Iterator[pd.DataFrame], shipment: Shipment, source: str, ids: list[str]
) -> Iterator[pd.DataFrame]:
    """Each batch checked as one machine checks a chunk (its report as a row of ``REPORT``), and scored by
    ``score_chunk`` only when it passed (its rows in ``SCORES``)."""
    bundle = _executor_bundle(shipment)
    outputs = _output_columns(bundle)
    for chunk in batches:
        report = validate_chunk(chunk, bundle.schema, source)
        texts = [json.dumps({"rows": report.rows, "columns": report.columns})]
        texts += [json.dumps(_issue_json(i)) for i in report.issues]
        scored = None if not report.passed else score_chunk(bundle.predictor, bundle.schema, chunk, bundle.info.version)
        if scored is not None:
            scored[PART] = SCORES
            yield _for_arrow(scored)
        # the report rows in the scores' columns: empty but for the report
        rows = pd.DataFrame({c: pd.Series([None] * len(texts), dtype=object) for c in ids})
        for name, kind in outputs:
            rows[name] = float("nan") if kind == "double" else None
        rows[REPORT_COLUMN] = texts
        rows[PART] = REPORT
        yield _for_arrow(rows)


def _issue_json(issue: ValidationIssue) -> dict[str, Any]:
    return {
        "column": issue.column, "rule": issue.rule, "failing": issue.failing, "examples": list(issue.examples),
        "severity": issue.severity, "limit": issue.limit,
    }  # fmt: skip


def _merge(merged: MergedReport, row: dict[str, Any]) -> None:
    if "column" not in row:
        merged.add_counts(int(row["rows"]), int(row["columns"]))
        return
    merged.add_issue(
        ValidationIssue(
            row["column"], row["rule"], int(row["failing"]), tuple(row["examples"]), row["severity"], row["limit"]
        )
    )


def _for_arrow(frame: pd.DataFrame) -> pd.DataFrame:
    """Text columns as Python strings and None: pyspark 4 cannot hand pandas 3's string arrays (nor NaN as a
    missing string) to the JVM."""
    out = frame.copy(deep=False)
    for c in out.columns:
        column = out[c]
        if not pd.api.types.is_numeric_dtype(column.dtype) or pd.api.types.is_bool_dtype(column.dtype):
            values = column.astype(object)
            out[c] = values.where(values.notna(), None)
    return out


# An executor's Python worker runs task after task: it builds each job's predictor once (keyed by the archive).
_EXECUTOR_BUNDLES: dict[str, ModelBundle] = {}


def _executor_bundle(shipment: Shipment) -> ModelBundle:
    bundle = _EXECUTOR_BUNDLES.get(shipment.archive)
    if bundle is None:
        bundle = _EXECUTOR_BUNDLES[shipment.archive] = _build_on_executor(shipment)
    return bundle


def _build_on_executor(shipment: Shipment) -> ModelBundle:
    """The version as this executor's Python worker builds it: its archive unpacked, checked against the
    manifest the driver verified (``open_copy``: an ``IntegrityError`` if any file differs), then the predictor."""
    from pyspark import SparkFiles

    root = Path(tempfile.mkdtemp(prefix="shipml-model-"))
    with tarfile.open(SparkFiles.get(shipment.archive)) as tar:
        tar.extractall(root, filter="data")
    loaded = open_copy(shipment.info, root)
    return bundle_from_loaded(loaded, shipment.fast_path, KernelLoader(shipment.native))


def _output_columns(bundle: ModelBundle) -> list[tuple[str, str]]:
    """The columns ``score_chunk`` makes after the ids, with their Spark types."""
    if bundle.classes:
        columns = [(f"proba_{c!s}", "double") for c in bundle.classes] + [("prediction", "string")]
    else:
        columns = [("prediction", "double")]
    return [*columns, ("model_version", "string")]


def _output_schema(input_schema: Any, ids: list[str], bundle: ModelBundle) -> str:
    """The columns ``score_chunk`` makes, as Spark's DDL: the id columns as read, then the outputs."""
    fields = [f"`{c}` {input_schema[c].dataType.simpleString()}" for c in ids]
    fields += [f"`{name}` {kind}" for name, kind in _output_columns(bundle)]
    return ", ".join(fields)
