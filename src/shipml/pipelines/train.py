"""`shipml train`: validate, split, cross-validate, fit, evaluate, profile, register, gate."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from sklearn.base import clone
from sklearn.model_selection import KFold, StratifiedKFold, train_test_split
from sklearn.pipeline import Pipeline

from shipml.adapters.files import file_sha256
from shipml.adapters.native import load_kernel
from shipml.adapters.registry import (
    FAST_PREDICTOR_FILE,
    MlflowRegistry,
    RunPayload,
    VersionInfo,
    git_commit,
    tags_from,
)
from shipml.config import GateSettings, Settings, redact_uri
from shipml.core.fast.model import FastPredictor
from shipml.core.fast.verify import VERDICT_ARTIFACT, Verdict
from shipml.core.metrics import Evaluation, evaluate, metric_names, positive_class
from shipml.core.model import build_pipeline, make_estimator
from shipml.core.predictor import PipelinePredictor
from shipml.core.profile import ReferenceProfile, build_profile
from shipml.core.schema import FeatureSchema, Task
from shipml.core.validation import ValidationReport, validate_frame
from shipml.errors import ConfigError, DataValidationError, TrainingError
from shipml.pipelines.bundle import REFERENCE_SAMPLE_ARTIFACT, REFERENCE_SAMPLE_ROWS
from shipml.pipelines.data import feature_frame, load_training_frame, resolve_schema, thresholds
from shipml.pipelines.fast_path import build_and_verify, rows_from_frame

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class TrainResult:
    """A fitted pipeline with everything needed to register and later monitor it."""

    pipeline: Pipeline
    schema: FeatureSchema
    profile: ReferenceProfile
    cv: dict[str, tuple[float, float]]  # metric -> (mean, std) over the folds
    holdout: Evaluation
    report: ValidationReport
    lineage: dict[str, str]
    rows: tuple[int, int]  # (train, test)
    input_example: pd.DataFrame
    holdout_index: tuple[int, ...] = ()  # row labels of the holdout in the data file (0-based data rows)
    duplicates_dropped: int = 0  # exact copies (features + target) dropped before the split
    fast: FastPredictor | None = None  # verified; registered packed, next to the model
    fast_verdict: Verdict | None = None  # registered as shipml/fast_path.json (and, for people, a tag)
    # training rows, for the monitoring job's multivariate check (a domain classifier needs rows, not bins)
    reference_sample: pd.DataFrame | None = None


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    lines: tuple[str, ...]


@dataclass(frozen=True)
class TrainOutcome:
    result: TrainResult
    version: VersionInfo
    gate: GateVerdict


def check_gate_names(gates: dict[str, GateSettings], task: Task) -> None:
    """A gate on a metric the task does not compute is a config error, found before any work."""
    known = metric_names(task)
    problems = [
        f"training.gates.{name}: unknown metric for a {task} task; known: {', '.join(known)}"
        for name in gates
        if name not in known
    ]
    if problems:
        raise ConfigError(problems)


def judge_gates(gates: dict[str, GateSettings], metrics: dict[str, float]) -> GateVerdict:
    lines, passed = [], True
    for name, gate in sorted(gates.items()):
        value = metrics[name]
        if gate.min is not None and value < gate.min:
            passed = False
            lines.append(f"gate {name}: {value:.4f} < min {gate.min:g} (missed by {gate.min - value:.4f})")
        elif gate.max is not None and value > gate.max:
            passed = False
            lines.append(f"gate {name}: {value:.4f} > max {gate.max:g} (missed by {value - gate.max:.4f})")
        else:
            bound = f">= {gate.min:g}" if gate.min is not None else f"<= {gate.max:g}"
            lines.append(f"gate {name}: {value:.4f} {bound} ok")
    return GateVerdict(passed, tuple(lines))


def fit(settings: Settings, data: str | Path | None = None, progress: Progress | None = None) -> TrainResult:
    """Everything of a training run short of the registry. Raises on invalid data or config."""
    model_cfg, data_cfg = settings.require_training()
    cfg = settings.training
    check_gate_names(cfg.gates, model_cfg.task)
    estimator = make_estimator(model_cfg.estimator, model_cfg.params, model_cfg.task, cfg.seed)
    df, path = load_training_frame(settings, data)
    schema, _ = resolve_schema(model_cfg, data_cfg, df)
    report = validate_frame(
        df,
        schema,
        source=str(path),
        thresholds=thresholds(settings.validation),
        ignore_columns=tuple(data_cfg.drop_columns),
    )
    if not report.passed:
        raise DataValidationError(report.summary(), report)
    # Copies of a row would straddle train and holdout (and the CV folds) and inflate the gated metrics.
    duplicated = df.duplicated(subset=[*schema.names, schema.target.name])
    df = df[~duplicated]
    X = feature_frame(df, schema)
    y = df[schema.target.name]
    if schema.target.task != "regression":
        y = y.astype(str) if not pd.api.types.is_integer_dtype(y) else y
    classify = schema.target.task != "regression"
    positive = positive_class(np.unique(y), y, cfg.positive_class) if schema.target.task == "binary" else None
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=cfg.test_size, random_state=cfg.seed, stratify=y if classify else None
    )
    pipeline = build_pipeline(schema, estimator)
    folds = (StratifiedKFold if classify else KFold)(n_splits=cfg.cv_folds, shuffle=True, random_state=cfg.seed)
    per_fold: list[dict[str, float]] = []
    for i, (tr, va) in enumerate(folds.split(X_train, y_train)):
        fold_model = clone(pipeline).fit(X_train.iloc[tr], y_train.iloc[tr])
        per_fold.append(_evaluate(fold_model, schema.target.task, X_train.iloc[va], y_train.iloc[va], positive).metrics)
        if progress:
            progress("cross-validation", i + 1, cfg.cv_folds)
    cv = {m: (float(np.mean([f[m] for f in per_fold])), float(np.std([f[m] for f in per_fold]))) for m in per_fold[0]}
    try:
        pipeline.fit(X_train, y_train)
    except ValueError as exc:
        raise TrainingError(f"fitting {model_cfg.estimator} failed: {exc}") from None
    if progress:
        progress("fit", 1, 1)
    holdout = _evaluate(pipeline, schema.target.task, X_test, y_test, positive)
    # the reference of prediction drift: out-of-sample outputs, as serving will see (in-sample ones of a
    # forest are over-confident)
    holdout_pred = _profile_predictions(pipeline, schema.target.task, X_test, positive)
    kernel = load_kernel(settings.native)[0]
    fast, fast_verdict = build_and_verify(pipeline, schema, rows_from_frame(X_test, schema), kernel)
    if progress:
        progress("fast path verification", 1, 1)
    lineage = {
        "shipml.data_sha256": file_sha256(path),
        "shipml.data_file": path.name,
        "shipml.schema_sha256": schema.sha256(),
        "shipml.git_commit": git_commit() or "none",
        "shipml.fast_path": fast_verdict.tag(),
        "shipml.version": package_version("shipml"),
    }
    return TrainResult(
        pipeline=pipeline,
        schema=schema,
        profile=build_profile(X_train, schema, holdout_pred),
        cv=cv,
        holdout=holdout,
        report=report,
        lineage=lineage,
        rows=(len(X_train), len(X_test)),
        input_example=X_train.head(5),
        reference_sample=X_train.sample(min(REFERENCE_SAMPLE_ROWS, len(X_train)), random_state=cfg.seed),
        holdout_index=tuple(int(i) for i in X_test.index),
        duplicates_dropped=int(duplicated.sum()),
        fast=fast,
        fast_verdict=fast_verdict,
    )


def _evaluate(model: Pipeline, task: Task, X: pd.DataFrame, y: pd.Series, positive: Any = None) -> Evaluation:
    """Holdout metrics of the whole pipeline: the model sees preprocessed features, as in serving."""
    if task == "regression":
        return evaluate(task, y, model.predict(X), None, None)
    proba = model.predict_proba(X)
    classes = model.classes_
    return evaluate(task, y, classes[np.argmax(proba, axis=1)], proba, classes, positive)


def _profile_predictions(model: Pipeline, task: Task, X: pd.DataFrame, positive: Any = None) -> np.ndarray:
    """What the profile keeps of the predictions: the positive class's probability (binary), else the output."""
    if task == "binary":
        column = int(np.flatnonzero(model.classes_ == positive)[0])
        return np.asarray(model.predict_proba(X)[:, column])
    return np.asarray(model.predict(X))


def payload_for(settings: Settings, result: TrainResult) -> RunPayload:
    """What the registry logs for ``result``: params, metrics, tags, the shipml/ files."""
    model_cfg, _ = settings.require_training()
    cfg = settings.training
    params: dict[str, Any] = {
        "estimator": model_cfg.estimator,
        "task": model_cfg.task,
        "training.test_size": cfg.test_size,
        "training.cv_folds": cfg.cv_folds,
        "training.seed": cfg.seed,
        "data.train_rows": result.rows[0],
        "data.test_rows": result.rows[1],
        "data.duplicates_dropped": result.duplicates_dropped,
        "data.features": len(result.schema.features),
    }
    params.update({f"model.{k}": v for k, v in result.pipeline.named_steps["model"].get_params().items()})
    metrics = result.holdout.recorded()  # the gated metrics plus calibration_error (estimated performance)
    for name, (mean, std) in result.cv.items():
        metrics[f"cv_{name}_mean"] = mean
        metrics[f"cv_{name}_std"] = std
    evaluation = {
        "holdout": result.holdout.recorded(),
        "cv": {k: {"mean": m, "std": s} for k, (m, s) in result.cv.items()},
        "labels": list(result.holdout.labels),
        "positive_class": result.holdout.positive,
        "confusion_matrix": [list(r) for r in result.holdout.confusion],
        # the holdout's own uncertainty, which a monitored window is compared with (core.performance.performance_drop)
        "holdout_rows": result.holdout.rows,
        "holdout_intervals": {k: list(v) for k, v in result.holdout.intervals.items()},
    }
    if result.holdout.recalibration is not None:  # what estimated performance maps the scores with
        evaluation["recalibration"] = result.holdout.recalibration.to_dict()
    files = {
        "shipml/schema.json": result.schema.to_json(),
        "shipml/profile.json": result.profile.to_json(),
        "shipml/validation.json": json.dumps(result.report.to_dict(), indent=2),
        "shipml/evaluation.json": json.dumps(evaluation, indent=2),
        "shipml/config.yaml": config_artifact(settings),
        "shipml/input_example.json": result.input_example.to_json(orient="records"),
    }
    if result.reference_sample is not None:
        files[REFERENCE_SAMPLE_ARTIFACT] = result.reference_sample.to_json(orient="split", index=False)
    if result.fast_verdict is not None:
        files[VERDICT_ARTIFACT] = result.fast_verdict.to_json()  # what the server reads (pipelines/bundle.py)
    requirements = tuple(f"{pkg}=={package_version(pkg)}" for pkg in ("scikit-learn", "numpy", "pandas", "mlflow"))
    return RunPayload(
        name=model_cfg.name,
        run_name=f"{model_cfg.name}-train",
        params=tags_from(params),
        metrics=metrics,
        tags=dict(result.lineage),
        files=files,
        model=result.pipeline,
        input_example=result.input_example,
        pip_requirements=requirements,
        model_files=_packed_fast(result, files["shipml/input_example.json"]),
    )


def config_artifact(settings: Settings) -> str:
    """The run's configuration as published with the model (readable by anyone who can read the registry):
    without the sections of the deployment (``store``, ``serve``, ``auth``: URIs with passwords, keys), and
    with the credentials of every URI left masked (a registry URI can carry a token)."""
    return yaml.safe_dump(_redacted(settings.model_dump(mode="json", exclude=_UNPUBLISHED)), sort_keys=False)


_UNPUBLISHED = {"store", "serve", "auth"}


def _redacted(value: Any) -> Any:
    if isinstance(value, str):
        return redact_uri(value)
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    return value


def _packed_fast(result: TrainResult, example_json: str) -> dict[str, bytes]:
    """The verified fast predictor, packed with the pipeline's own outputs on the input example (the server
    checks the unpacked predictor against them before it serves)."""
    if result.fast is None:
        return {}
    want = PipelinePredictor(result.pipeline, result.schema).predict(json.loads(example_json))
    expected = want.proba if want.proba is not None else want.values
    assert expected is not None  # noqa: S101 - one of the two
    return {FAST_PREDICTOR_FILE: result.fast.pack({"example_output": expected})}


def train_and_register(
    settings: Settings, registry: MlflowRegistry, data: str | Path | None = None, progress: Progress | None = None
) -> TrainOutcome:
    """Train, register the version, and give it `staging` when the gates pass."""
    return register_trained(settings, registry, fit(settings, data, progress))


def register_trained(settings: Settings, registry: MlflowRegistry, result: TrainResult) -> TrainOutcome:
    """Register what ``fit`` returned for ``settings`` as a new version, and give it `staging` when the gates
    pass."""
    version = registry.register(payload_for(settings, result))
    gate = judge_gates(settings.training.gates, result.holdout.metrics)
    if gate.passed:
        reason = "gates passed" + (": " + "; ".join(gate.lines) if gate.lines else " (no gates configured)")
        registry.move_alias(version.name, "staging", version.version, reason)
        version = registry.get_version(version.name, version.version)
    return TrainOutcome(result, version, gate)
