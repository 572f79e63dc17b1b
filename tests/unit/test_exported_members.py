"""The public API is what ``shipml/__init__.py`` exports: pinned here, so that a name added to or dropped from
it is a deliberate change (as httpx's tests/test_exported_members.py does)."""

from __future__ import annotations

import shipml

PUBLIC = [
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


def test_all_is_the_pinned_public_api() -> None:
    assert shipml.__all__ == PUBLIC


def test_every_exported_name_exists_and_nothing_public_is_left_out() -> None:
    assert all(hasattr(shipml, name) for name in shipml.__all__)
    public = {name for name in vars(shipml) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(shipml, name)).__name__ == "module"}  # subpackages imported
    assert public - modules == set(shipml.__all__)


def test_the_errors_share_one_base_a_user_can_catch() -> None:
    errors = [getattr(shipml, name) for name in shipml.__all__ if name.endswith("Error")]
    assert all(issubclass(error, shipml.ShipmlError) for error in errors)
