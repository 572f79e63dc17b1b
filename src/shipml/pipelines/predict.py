"""`shipml predict`: score a file with a registered version, chunk by chunk, all or nothing."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from shipml.adapters.files import AtomicTableWriter, iter_table
from shipml.adapters.native import KernelLoader
from shipml.adapters.registry import LoadedModel, MlflowRegistry, ModelRef
from shipml.core.predictor import Predictor, columns_from_frame
from shipml.core.schema import FeatureSchema
from shipml.core.validation import Rule, ValidationIssue, ValidationReport, validate_frame
from shipml.errors import DataLoadError, DataValidationError
from shipml.pipelines.bundle import load_bundle
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
    kernels: KernelLoader | None = None,
    fast_path: bool = True,
    progress: RowsDone | None = None,
) -> ScoreSummary:
    """Validate every chunk of ``data`` against the version's schema, then score it into ``output``.

    Two passes over the file so that invalid data writes nothing; memory holds one chunk at a time.
    Scores come from the predictor the server would use (the verified fast one, else the pipeline).
    """
    if output.resolve() == data.resolve():
        raise DataLoadError(f"{output}: output would overwrite the input file")
    bundle = load_bundle(registry, ref, cache_dir, fast_path=fast_path, kernels=kernels)
    _validate_all(data, bundle.schema, chunk_rows)
    with AtomicTableWriter(output) as writer:
        for chunk in iter_table(data, chunk_rows, text_columns=bundle.schema.id_columns):
            writer.write(score_chunk(bundle.predictor, bundle.schema, chunk, bundle.info.version))
            if progress:
                progress(len(chunk))
    if writer.rows == 0:
        raise DataLoadError(f"{data}: no rows to score")
    return ScoreSummary(bundle.info.name, bundle.info.version, writer.rows, output)


def _validate_all(data: Path, schema: FeatureSchema, chunk_rows: int) -> None:
    merged = MergedReport(str(data))
    for chunk in iter_table(data, chunk_rows, text_columns=schema.id_columns):
        merged.add(validate_chunk(chunk, schema, str(data)))
    merged.check()


def validate_chunk(chunk: pd.DataFrame, schema: FeatureSchema, source: str) -> ValidationReport:
    """One chunk checked record by record. No thresholds: the data-set rules are for training data, not a batch
    to score, whose records the server would take one by one (and a chunk is an arbitrary slice of it)."""
    return validate_frame(chunk, schema, source=source, require_target=False)


class MergedReport:
    """The chunks' reports as one: rows added up, each (column, rule) once with its failures added up and its
    first five examples. Raises ``DataValidationError`` from ``check`` when anything failed."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.rows = 0
        self.columns = 0
        self.issues: dict[tuple[str, Rule], ValidationIssue] = {}

    def add(self, report: ValidationReport) -> None:
        self.add_counts(report.rows, report.columns)
        for issue in report.issues:
            self.add_issue(issue)

    def add_counts(self, rows: int, columns: int) -> None:
        self.rows += rows
        self.columns = columns

    def add_issue(self, issue: ValidationIssue) -> None:
        if issue.scope == "dataset":
            return
        key = (issue.column, issue.rule)
        old = self.issues.get(key)
        if old is None:
            self.issues[key] = issue
        elif issue.rule != "missing_column":
            examples = (old.examples + tuple(e for e in issue.examples if e not in old.examples))[:5]
            self.issues[key] = ValidationIssue(
                issue.column, issue.rule, old.failing + issue.failing, examples, issue.severity, issue.limit
            )

    def check(self) -> None:
        report = ValidationReport(self.source, self.rows, self.columns, tuple(self.issues.values()))
        if not report.passed:
            raise DataValidationError(report.summary(), report)


def score_chunk(predictor: Predictor, schema: FeatureSchema, chunk: pd.DataFrame, version: str) -> pd.DataFrame:
    """One validated chunk's output table: its id columns, each class's probability (or the value), the
    prediction and the version. The features go in as columns, the values the server would see as records."""
    outputs = predictor.predict_columns(columns_from_frame(feature_frame(chunk, schema), schema))
    out = pd.DataFrame({c: chunk[c] for c in schema.id_columns if c in chunk.columns}, index=chunk.index)
    if outputs.proba is None:
        out["prediction"] = outputs.values
    else:
        classes = [str(c) for c in outputs.classes]
        for i, c in enumerate(classes):
            out[f"proba_{c}"] = outputs.proba[:, i]
        out["prediction"] = np.asarray(classes, dtype=object)[np.argmax(outputs.proba, axis=1)]
    out["model_version"] = version
    return out.reset_index(drop=True)
