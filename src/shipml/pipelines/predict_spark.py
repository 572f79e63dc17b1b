"""`shipml predict --engine spark`: a Parquet file or directory scored on a Spark cluster, all or nothing.

The same use case as ``pipelines/predict.py``, spread over executors: the driver loads and verifies the version
(``load_bundle``: the registry's manifest), checks every row (``mapInPandas`` over ``validate_chunk``, the
reports merged as one machine merges its chunks: invalid data writes nothing and gives the same report), then
scores with ``mapInPandas`` over ``score_chunk``, the very function one machine uses, with the same verified
predictor: each executor gets the version's files as one archive (``SparkContext.addFile``), checks them
against the manifest the driver verified (a file that differs fails the job with the executor's one line) and
builds the predictor as the driver did (``bundle_from_loaded``). Spark writes the output into a directory
beside ``OUT`` through its committer (a task that is retried, on a lost executor, commits once), renamed to
``OUT`` once the job succeeded.
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

from shipml.adapters.native import KernelLoader
from shipml.adapters.registry import LoadedModel, MlflowRegistry, ModelRef, VersionInfo, open_copy
from shipml.adapters.registry.integrity import COVERED
from shipml.adapters.spark import job_error, spark_session
from shipml.config import NativeSettings
from shipml.core.schema import FeatureSchema
from shipml.core.validation import ValidationIssue
from shipml.errors import DataLoadError
from shipml.pipelines.bundle import ModelBundle, bundle_from_loaded, load_bundle
from shipml.pipelines.predict import MergedReport, ScoreSummary, score_chunk, validate_chunk

# What an executor sends back of each chunk's validation: its counts, then one row per issue.
_ISSUES = (
    "rows long, columns long, column string, rule string, failing long, examples string, severity string, limit string"
)


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
    conf = {"spark.sql.execution.arrow.maxRecordsPerBatch": str(chunk_rows)}
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
    _replace(staged, output)
    return ScoreSummary(bundle.info.name, bundle.info.version, rows, output)


def _run(
    spark: Any, bundle: ModelBundle, data: Path, staged: Path, archive: Path, shipment: Shipment, log_file: Path
) -> int:
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import PySparkException

    schema, source = bundle.schema, str(data)
    try:
        frame = spark.read.parquet(str(data.resolve()))
        missing = [c for c in schema.id_columns if c not in frame.columns]
        ids = [c for c in schema.id_columns if c not in missing]
        merged = MergedReport(source)
        checked = frame.mapInPandas(functools.partial(_validate_batches, schema=schema, source=source), _ISSUES)
        for row in checked.collect():
            _merge(merged, row)
        merged.check()  # DataValidationError with the same report as one machine's: nothing written
        if merged.rows == 0:
            raise DataLoadError(f"{data}: no rows to score")
        spark.sparkContext.addFile(str(archive))
        out_schema = _output_schema(frame.schema, ids, bundle)
        scored = frame.mapInPandas(functools.partial(_score_batches, shipment=shipment, ids=ids), out_schema)
        scored.write.parquet(str(staged.resolve()))
    except (PySparkException, Py4JJavaError) as exc:
        raise job_error(exc, log_file) from None
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


def _validate_batches(batches: Iterator[pd.DataFrame], schema: FeatureSchema, source: str) -> Iterator[pd.DataFrame]:
    for chunk in batches:
        report = validate_chunk(chunk, schema, source)
        issues = report.issues
        text = [None, *(i.column for i in issues)], [None, *(i.rule for i in issues)]
        yield pd.DataFrame(
            {
                "rows": pd.Series([report.rows] + [0] * len(issues), dtype="int64"),
                "columns": pd.Series([report.columns] + [0] * len(issues), dtype="int64"),
                "column": pd.Series(text[0], dtype=object),
                "rule": pd.Series(text[1], dtype=object),
                "failing": pd.Series([0, *(i.failing for i in issues)], dtype="int64"),
                "examples": pd.Series([None, *(json.dumps(list(i.examples)) for i in issues)], dtype=object),
                "severity": pd.Series([None, *(i.severity for i in issues)], dtype=object),
                "limit": pd.Series([None, *(json.dumps(i.limit) for i in issues)], dtype=object),
            }
        )


def _merge(merged: MergedReport, row: Any) -> None:
    if row["column"] is None:
        merged.add_counts(int(row["rows"]), int(row["columns"]))
        return
    examples = tuple(json.loads(row["examples"]))
    limit = json.loads(row["limit"])
    merged.add_issue(ValidationIssue(row["column"], row["rule"], int(row["failing"]), examples, row["severity"], limit))


def _score_batches(batches: Iterator[pd.DataFrame], shipment: Shipment, ids: list[str]) -> Iterator[pd.DataFrame]:
    bundle = _executor_bundle(shipment)
    for chunk in batches:
        yield _for_arrow(score_chunk(bundle.predictor, bundle.schema, chunk, bundle.info.version))


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


def _output_schema(input_schema: Any, ids: list[str], bundle: ModelBundle) -> str:
    """The columns ``score_chunk`` makes, as Spark's DDL: the id columns as read, then the outputs."""
    fields = [f"`{c}` {input_schema[c].dataType.simpleString()}" for c in ids]
    if bundle.classes:
        fields += [f"`proba_{c!s}` double" for c in bundle.classes]
        fields.append("`prediction` string")
    else:
        fields.append("`prediction` double")
    fields.append("`model_version` string")
    return ", ".join(fields)
