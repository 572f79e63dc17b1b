"""`shipml validate`: check a data file against the configured (or a registered model's) schema."""

from __future__ import annotations

from pathlib import Path

from shipml.adapters.files import load_table
from shipml.config import Settings
from shipml.core.schema import FeatureSchema
from shipml.core.validation import ValidationReport, validate_frame
from shipml.pipelines.data import resolve_schema, thresholds


def validate_file(settings: Settings, path: Path, schema: FeatureSchema | None = None) -> ValidationReport:
    """Validate ``path``: against ``schema`` when given (serving data, no target needed),
    else against the config's schema with the target required (training data)."""
    df = load_table(path)
    if schema is not None:
        return validate_frame(
            df,
            schema,
            source=str(path),
            thresholds=thresholds(settings.validation),
            require_target=schema.target.name in df.columns,
        )
    model, data = settings.require_training()
    schema, _ = resolve_schema(model, data, df)
    return validate_frame(
        df,
        schema,
        source=str(path),
        thresholds=thresholds(settings.validation),
        ignore_columns=tuple(data.drop_columns),
    )
