"""``Settings``: the whole configuration, its sections and where each value comes from.

Precedence, highest first: ``SHIPML_REGISTRY_URI``, nested environment variables (``SHIPML_TRAINING__CV_FOLDS=3``),
the values given (the YAML file), the defaults.
"""

from __future__ import annotations

import os
from typing import Annotated

from pydantic import Field
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from shipml.config.monitoring import ExperimentSettings, MonitorSettings
from shipml.config.serving import AuthSettings, NativeSettings, ServeSettings
from shipml.config.store import StoreSettings
from shipml.config.training import (
    DataSettings,
    ModelSettings,
    PredictSettings,
    RegistrySettings,
    TrainingSettings,
    ValidationSettings,
)
from shipml.errors import ConfigError


class Settings(BaseSettings):
    """The whole configuration."""

    model_config = SettingsConfigDict(
        env_prefix="SHIPML_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    home: str = Field(default=".shipml", description="state directory of the embedded defaults")
    model: ModelSettings | None = None
    data: DataSettings | None = None
    validation: ValidationSettings = ValidationSettings()
    training: TrainingSettings = TrainingSettings()
    registry: RegistrySettings = RegistrySettings()
    predict: PredictSettings = PredictSettings()
    serve: ServeSettings = ServeSettings()
    auth: AuthSettings = AuthSettings()
    store: StoreSettings = StoreSettings()
    monitor: MonitorSettings = MonitorSettings()
    experiments: ExperimentSettings = ExperimentSettings()
    native: Annotated[NativeSettings, NoDecode] = NativeSettings()

    def serve_ref(self) -> str:
        """The registry reference the service serves."""
        if self.serve.model:
            return self.serve.model
        if self.serve.variants:  # an experiment: its first variant describes the service
            return self.serve.variants[0].model
        if self.model is None:
            raise ConfigError(["serve.model: required when the config has no model section (e.g. churn@production)"])
        return f"{self.model.name}@production"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment beats the file (passed as init kwargs); the short
        # SHIPML_REGISTRY_URI beats everything, as MLflow users expect.
        return (_RegistryUriSource(settings_cls), env_settings, init_settings)

    def require_training(self) -> tuple[ModelSettings, DataSettings]:
        """The sections training needs, or a ConfigError naming the missing ones."""
        problems = [f"{key}: required section missing" for key in ("model", "data") if getattr(self, key) is None]
        if problems:
            raise ConfigError(problems)
        assert self.model is not None and self.data is not None  # noqa: S101 - narrowed above
        return self.model, self.data


class _RegistryUriSource(InitSettingsSource):
    """``SHIPML_REGISTRY_URI`` as a short form of ``SHIPML_REGISTRY__URI``."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        uri = os.environ.get("SHIPML_REGISTRY_URI")
        super().__init__(settings_cls, {"registry": {"uri": uri}} if uri else {})
