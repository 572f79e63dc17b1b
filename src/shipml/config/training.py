"""The sections from data to a registered version: the model, the data and its schema, the quality checks, the split
and the promotion gates, the registry, and offline scoring."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from shipml.config.section import Section
from shipml.core.schema import FeatureKind, Task


class ModelSettings(Section):
    """What to train and under which registered name."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$", description="registered model name")
    task: Task = Field(description="binary, multiclass or regression")
    estimator: str = Field(
        default="sklearn.ensemble.RandomForestClassifier",
        description="import path of an sklearn-compatible estimator class",
    )
    params: dict[str, Any] = Field(default_factory=dict, description="estimator parameters")


class FeatureSettings(Section):
    """One feature of the schema, as written in the config or a schema file."""

    name: str = Field(min_length=1)
    kind: FeatureKind
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    categories: list[str] | None = None


class DataSettings(Section):
    """Where the training data is and how to read it."""

    path: str | None = Field(default=None, description="training data file (CSV or Parquet)")
    target: str = Field(min_length=1, description="the column to predict")
    id_columns: list[str] = Field(default_factory=list, description="columns kept in outputs, never used as features")
    drop_columns: list[str] = Field(default_factory=list, description="columns ignored entirely")
    schema_file: str | None = Field(default=None, description="YAML schema written by `shipml schema infer`")
    features: list[FeatureSettings] | None = Field(default=None, description="inline feature schema")


class ValidationSettings(Section):
    """Thresholds of the data quality checks."""

    max_null_rate: float = Field(default=0.2, ge=0.0, le=1.0, description="max fraction of nulls per column")
    max_duplicate_rate: float = Field(default=0.05, ge=0.0, le=1.0, description="max fraction of duplicate rows")
    min_class_rate: float = Field(default=0.01, ge=0.0, le=0.5, description="min fraction of the rarest class")
    allow_constant_columns: bool = Field(default=False, description="accept columns with a single value")


class GateSettings(Section):
    """A promotion gate on one holdout metric."""

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> GateSettings:
        if self.min is None and self.max is None:
            raise ValueError("needs `min` or `max`")
        return self


class TrainingSettings(Section):
    """Split, cross-validation and promotion gates."""

    test_size: float = Field(default=0.2, gt=0.0, lt=1.0, description="holdout fraction")
    cv_folds: int = Field(default=5, ge=2, le=50, description="k of the k-fold cross-validation")
    seed: int = Field(default=42, ge=0, description="seed of every random choice")
    gates: dict[str, GateSettings] = Field(default_factory=dict, description="metric -> {min|max}")
    positive_class: str | None = Field(
        default=None,
        description="binary tasks: the label precision, recall, f1 and their gates measure (as text, e.g. "
        "'churned'); default: the label 1, true or yes when there is one, else the rarer label",
    )


class RegistrySettings(Section):
    """The MLflow tracking server / registry."""

    uri: str = Field(default="sqlite:///.shipml/mlflow.db", description="MLflow tracking + registry URI")
    artifact_root: str = Field(default=".shipml/artifacts", description="artifact root of the embedded store")
    experiment: str = Field(default="shipml", min_length=1, description="MLflow experiment name")
    timeout_s: int = Field(
        default=10,
        ge=1,
        le=600,
        description="seconds one request to an MLflow server may take (MLflow's own default is 120); "
        "an MLFLOW_HTTP_REQUEST_TIMEOUT in the environment wins",
    )
    retries: int = Field(
        default=2,
        ge=0,
        le=10,
        description="retries of a failed request to an MLflow server, backing off from 1 s (MLflow's own default "
        "is 7 retries, over about two minutes); an MLFLOW_HTTP_REQUEST_MAX_RETRIES in the environment wins",
    )


class PredictSettings(Section):
    """Offline scoring."""

    chunk_rows: int = Field(default=50_000, ge=1, description="rows read, validated and scored at a time")
    spark_master: str = Field(
        default="local[*]",
        description="the Spark master of `shipml predict --engine spark` when --master is not given "
        "(local[N], spark://HOST:PORT, yarn, k8s://...)",
    )
    spark_connect_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=120,
        description="how long a spark:// master may take to accept a connection before the job is refused",
    )
