"""Loading the configuration: ``shipml.yaml`` (or another file, or YAML text) plus the environment into
``Settings``, every problem a ``ConfigError`` with its key path, one line each; the environment that makes a server's
worker processes build the same ``Settings``; the starter config of ``shipml init``."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_settings import InitSettingsSource

from shipml.config.messages import format_validation_error
from shipml.config.settings import Settings
from shipml.errors import ConfigError

DEFAULT_CONFIG = "shipml.yaml"


def load_settings(path: str | Path | None = None, *, overrides: dict[str, Any] | None = None) -> Settings:
    """Read ``path`` (default ``shipml.yaml`` if present) into ``Settings``.

    ``overrides`` (from CLI flags) are applied last, as nested dicts.
    """
    data: dict[str, Any] = {}
    source = ""
    if path is not None or Path(DEFAULT_CONFIG).exists():
        file = Path(path) if path is not None else Path(DEFAULT_CONFIG)
        source = str(file)
        data = _read_yaml(file)
    return settings_from_mapping(data, source, overrides=overrides)


def settings_from_text(text: str, source: str) -> Settings:
    """Settings from YAML text (the embedded example configs)."""
    loaded = yaml.safe_load(text)
    return settings_from_mapping(loaded if isinstance(loaded, dict) else {}, source)


def settings_from_mapping(
    data: dict[str, Any], source: str = "", *, overrides: dict[str, Any] | None = None
) -> Settings:
    """Validate a parsed mapping (plus the environment) into Settings."""
    try:
        settings = Settings(**data)
        if overrides:
            merged = _deep_merge(settings.model_dump(exclude_unset=False), overrides)
            settings = _without_environment(merged)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc), source) from None
    return settings


def _without_environment(values: dict[str, Any]) -> Settings:
    """``values`` (file and environment already merged, CLI flags on top) validated as they are.

    ``Settings.model_validate`` would run the settings sources again, and there the environment
    ranks above init values: a ``--port`` flag would silently lose to ``SHIPML_SERVE__PORT``.
    """
    # `_build_sources` is pydantic-settings' documented way in; the mypy plugin only knows the fields
    return Settings(_build_sources=((InitSettingsSource(Settings, values),), {}))  # type: ignore[call-arg]


def _read_yaml(file: Path) -> dict[str, Any]:
    if not file.is_file():
        raise ConfigError([f"config file not found: {file}"])
    try:
        loaded = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{file}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(file)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{where}: invalid YAML: {problem}"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{file}: cannot read: {exc}"]) from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError([f"{file}: must be a mapping of keys to values, got {type(loaded).__name__}"])
    return loaded


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


WORKER_CONFIG_ENV = "SHIPML_CONFIG_FILE"


def settings_for_worker() -> Settings:
    """Settings of a server worker process: the file named by ``SHIPML_CONFIG_FILE``, plus the environment."""
    return load_settings(os.environ.get(WORKER_CONFIG_ENV) or None)


def worker_environment(config: str | Path | None, overrides: dict[str, str]) -> dict[str, str]:
    """Environment that makes worker processes build the same Settings as this process."""
    env = {f"SHIPML_{key.upper().replace('.', '__')}": value for key, value in overrides.items()}
    if "registry.uri" in overrides:
        # the short form ranks above the nested one: a user's own SHIPML_REGISTRY_URI would win in the workers
        env["SHIPML_REGISTRY_URI"] = overrides["registry.uri"]
    if config is not None:
        env[WORKER_CONFIG_ENV] = str(Path(config).resolve())
    elif Path(DEFAULT_CONFIG).exists():
        env[WORKER_CONFIG_ENV] = str(Path(DEFAULT_CONFIG).resolve())
    return env


def starter_config() -> str:
    """The commented config that ``shipml init`` writes."""
    return resources.files("shipml").joinpath("starter.yaml").read_text(encoding="utf-8")
