"""The configuration: ``shipml.yaml`` parsed into typed, frozen sections, with ``SHIPML_*`` overrides; every problem
is reported with its key path, one line each.

The package re-exports what callers use. Inside: ``settings`` (``Settings`` and where values come from),
``loading`` (files, text, the workers' environment), ``messages`` (the one-line problems, ``redact_uri``), and a
module per group of sections: ``training``, ``serving``, ``store``, ``monitoring``.
"""

from shipml.config.loading import (
    DEFAULT_CONFIG,
    WORKER_CONFIG_ENV,
    load_settings,
    settings_for_worker,
    settings_from_mapping,
    settings_from_text,
    starter_config,
    worker_environment,
)
from shipml.config.messages import format_validation_error, redact_uri
from shipml.config.monitoring import DriftSettings, ExperimentSettings, MonitorSettings
from shipml.config.serving import (
    VARIANT_NAME_MAX,
    ApiKeySettings,
    AuthSettings,
    BatchingSettings,
    KeyRole,
    NativeSettings,
    RateLimitSettings,
    ServeSettings,
    ShadowSettings,
    VariantSettings,
)
from shipml.config.settings import Settings
from shipml.config.store import StoreSettings
from shipml.config.training import (
    DataSettings,
    FeatureSettings,
    GateSettings,
    ModelSettings,
    PredictSettings,
    RegistrySettings,
    TrainingSettings,
    ValidationSettings,
)

__all__ = [
    "DEFAULT_CONFIG",
    "VARIANT_NAME_MAX",
    "WORKER_CONFIG_ENV",
    "ApiKeySettings",
    "AuthSettings",
    "BatchingSettings",
    "DataSettings",
    "DriftSettings",
    "ExperimentSettings",
    "FeatureSettings",
    "GateSettings",
    "KeyRole",
    "ModelSettings",
    "MonitorSettings",
    "NativeSettings",
    "PredictSettings",
    "RateLimitSettings",
    "RegistrySettings",
    "ServeSettings",
    "Settings",
    "ShadowSettings",
    "StoreSettings",
    "TrainingSettings",
    "ValidationSettings",
    "VariantSettings",
    "format_validation_error",
    "load_settings",
    "redact_uri",
    "settings_for_worker",
    "settings_from_mapping",
    "settings_from_text",
    "starter_config",
    "worker_environment",
]
