"""`shipml predict`: score a file with a registered version, chunk by chunk, all or nothing."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from shipml.adapters.files import AtomicTableWriter, iter_table
from shipml.adapters.mlflow_registry import LoadedModel, MlflowRegistry, ModelRef
from shipml.core.schema import FeatureSchema
from shipml.core.validation import ValidationIssue, ValidationReport, validate_frame
from shipml.errors import DataLoadError, DataValidationError
from shipml.pipelines.data import feature_frame

RowsDone = Callable[[int], None]


@dataclass(frozen=True)
class ScoreSummary:
    model: str
    version: str
    rows: int
    output: Path


def load_schema(model: LoadedModel) -> FeatureSchema:
    """The FeatureSchema registered with the version (shipml/schema.json)."""
    path = model.local_dir / "shipml" / "schema.json"
    return FeatureSchema.from_dict(
        json.loads(path.read_text(encoding="utf-8")), where=f"{model.info.name}/{model.info.version} schema"
    )


def score_file(
    registry: MlflowRegistry,
    ref: ModelRef,
    data: Path,
    output: Path,
    *,
    cache_dir: Path,
    chunk_rows: int,
    progress: RowsDone | None = None,
) -> ScoreSummary:
    """Validate every chunk of ``data`` against the version's schema, then score it into ``output``.

    Two passes over the file so that invalid data writes nothing; memory holds one chunk at a time.
    """
    if output.resolve() == data.resolve():
        raise DataLoadError(f"{output}: output would overwrite the input file")
    model = registry.load(ref, cache_dir)
    schema = load_schema(model)
    _validate_all(data, schema, chunk_rows)
    pipeline = model.pipeline
    classes = [str(c) for c in getattr(pipeline, "classes_", [])]
    with AtomicTableWriter(output) as writer:
        for chunk in iter_table(data, chunk_rows):
            writer.write(_score_chunk(pipeline, schema, classes, chunk, model.info.version))
            if progress:
                progress(len(chunk))
    if writer.rows == 0:
        raise DataLoadError(f"{data}: no rows to score")
    return ScoreSummary(model.info.name, model.info.version, writer.rows, output)


def _validate_all(data: Path, schema: FeatureSchema, chunk_rows: int) -> None:
    issues: dict[tuple[str, str], ValidationIssue] = {}
    rows = columns = 0
    for chunk in iter_table(data, chunk_rows):
        report = validate_frame(chunk, schema, source=str(data), require_target=False)
        rows += report.rows
        columns = report.columns
        for issue in report.issues:
            if issue.rule.startswith(("null_rate", "duplicate_rows", "constant")):
                continue  # data-set quality rules are for training data, not a batch to score
            key = (issue.column, issue.rule)
            old = issues.get(key)
            if old is None:
                issues[key] = issue
            elif issue.rule != "missing_column":
                examples = (old.examples + tuple(e for e in issue.examples if e not in old.examples))[:5]
                issues[key] = ValidationIssue(
                    issue.column, issue.rule, old.failing + issue.failing, examples, issue.severity
                )
    report = ValidationReport(str(data), rows, columns, tuple(issues.values()))
    if not report.passed:
        raise DataValidationError(report.summary(), report)


def _score_chunk(
    pipeline: object, schema: FeatureSchema, classes: list[str], chunk: pd.DataFrame, version: str
) -> pd.DataFrame:
    X = feature_frame(chunk, schema)
    out = pd.DataFrame({c: chunk[c].to_numpy() for c in schema.id_columns if c in chunk.columns}, index=chunk.index)
    if schema.target.task == "regression":
        out["prediction"] = pipeline.predict(X)  # type: ignore[attr-defined]
    else:
        proba = pipeline.predict_proba(X)  # type: ignore[attr-defined]
        for i, c in enumerate(classes):
            out[f"proba_{c}"] = proba[:, i]
        out["prediction"] = np.asarray(classes, dtype=object)[np.argmax(proba, axis=1)]
    out["model_version"] = version
    return out.reset_index(drop=True)
