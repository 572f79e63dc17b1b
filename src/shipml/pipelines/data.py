"""Loading the training data and settling its FeatureSchema (config, schema file, or inferred)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shipml.adapters.files import load_table, read_yaml_file
from shipml.config import DataSettings, ModelSettings, Settings, ValidationSettings
from shipml.core.schema import FeatureSchema, Target
from shipml.core.validation import QualityThresholds
from shipml.errors import ConfigError, SchemaError


def data_path(settings: Settings, override: str | Path | None) -> Path:
    """The training data file: the CLI's argument, else ``data.path``."""
    if override is not None:
        return Path(override)
    if settings.data is None or settings.data.path is None:
        raise ConfigError(["data.path: required value missing (or pass the data file on the command line)"])
    return Path(settings.data.path)


def resolve_schema(model: ModelSettings, data: DataSettings, df: pd.DataFrame | None) -> tuple[FeatureSchema, str]:
    """The schema and where it came from: inline features, the schema file, or inferred from ``df``."""
    if data.features is not None and data.schema_file is not None:
        raise ConfigError(["data: give either `features` or `schema_file`, not both"])
    if data.features is not None:
        # the same parser (and checks) as a schema file: the rules of a feature are written once
        inline: dict[str, Any] = {
            "features": [f.model_dump() for f in data.features],
            "target": asdict(_target(model, data, df)),
            "id_columns": list(data.id_columns),
        }
        return FeatureSchema.from_dict(inline, where="data"), "config data.features"
    if data.schema_file is not None:
        raw = read_yaml_file(data.schema_file)
        if not isinstance(raw, dict):
            raise SchemaError(f"{data.schema_file}: expected a mapping with `features` and `target`")
        schema = FeatureSchema.from_dict(raw, where=data.schema_file)
        if schema.target.name != data.target:
            raise SchemaError(
                f"{data.schema_file}: target is {schema.target.name!r} but data.target is {data.target!r}"
            )
        return schema, data.schema_file
    if df is None:
        raise ConfigError(["data.features: required to validate without data (or set data.schema_file)"])
    schema = FeatureSchema.infer(df, data.target, model.task, tuple(data.id_columns), tuple(data.drop_columns))
    return schema, "inferred from the data"


def _target(model: ModelSettings, data: DataSettings, df: pd.DataFrame | None) -> Target:
    classes = None
    if model.task != "regression" and df is not None and data.target in df.columns:
        classes = tuple(sorted(str(v) for v in df[data.target].dropna().unique()))
    return Target(data.target, model.task, classes)


def load_training_frame(settings: Settings, override: str | Path | None) -> tuple[pd.DataFrame, Path]:
    path = data_path(settings, override)
    return load_table(path), path


def thresholds(v: ValidationSettings) -> QualityThresholds:
    """The data-set checks' limits, from the settings (which hold their defaults)."""
    return QualityThresholds(v.max_null_rate, v.max_duplicate_rate, v.min_class_rate, v.allow_constant_columns)


def feature_frame(df: pd.DataFrame, schema: FeatureSchema) -> pd.DataFrame:
    """The model's input columns with stable dtypes: float64 numerics, object strings (NaN for missing)."""
    out = {}
    for f in schema.features:
        s = df[f.name]
        if f.is_numeric:
            out[f.name] = pd.to_numeric(s, errors="coerce").astype("float64")
        else:
            text = s.astype("string").astype(object)
            out[f.name] = text.where(s.notna(), np.nan)
    return pd.DataFrame(out, index=df.index)
