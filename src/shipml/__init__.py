"""shipml: take a tabular model from a notebook to production."""

from shipml.core.quiet_imports import collector_paused as _collector_paused

with _collector_paused():
    from shipml.config import Settings, load_settings
    from shipml.errors import (
        ConfigError,
        DataLoadError,
        DataValidationError,
        ModelLoadError,
        RegistryError,
        SchemaError,
        ShipmlError,
        TrainingError,
    )

__all__ = [
    "ConfigError",
    "DataLoadError",
    "DataValidationError",
    "ModelLoadError",
    "RegistryError",
    "SchemaError",
    "Settings",
    "ShipmlError",
    "TrainingError",
    "load_settings",
]
