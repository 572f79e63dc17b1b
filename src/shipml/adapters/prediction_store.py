"""Where the prediction store used to live: re-exports ``shipml.adapters.store`` for current importers."""

from shipml.adapters.store import (
    FeatureWindow,
    PredictionRow,
    PredictionStore,
    SchemaSlots,
    StoreError,
    StoreFull,
    StoreWriter,
)

__all__ = [
    "FeatureWindow",
    "PredictionRow",
    "PredictionStore",
    "SchemaSlots",
    "StoreError",
    "StoreFull",
    "StoreWriter",
]
