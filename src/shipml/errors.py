"""The exception hierarchy: every error a user can cause is a ``ShipmlError``.

The CLI turns any ``ShipmlError`` into its message on one line and its
``exit_code``; the server (later) turns it into a JSON error with a 4xx status.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # only for the annotation: core.validation imports this module
    from shipml.core.validation import ValidationReport


class ShipmlError(Exception):
    """Base class: a problem the user can fix, with a message that says how."""

    exit_code: int = 2

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def lines(self) -> list[str]:
        """The message as the lines to print, one problem per line."""
        return [self.message]


class ConfigError(ShipmlError):
    """The configuration file or the environment overrides are invalid."""

    def __init__(self, problems: Sequence[str], source: str = "") -> None:
        self.problems = list(problems)
        self.source = source
        prefix = f"{source}: " if source else ""
        super().__init__("\n".join(prefix + p for p in self.problems))

    def lines(self) -> list[str]:
        prefix = f"{self.source}: " if self.source else ""
        return [prefix + p for p in self.problems]


class DataLoadError(ShipmlError):
    """A data file is missing, unreadable or of an unknown format."""


class SchemaError(ShipmlError):
    """A feature schema is malformed or does not fit the data."""


class DataValidationError(ShipmlError):
    """Data given to train or score failed validation (bad input, so exit code 2, as any other);
    ``report`` holds every failed check. `shipml validate` reports a failed check itself, with exit code 1."""

    def __init__(self, message: str, report: ValidationReport) -> None:
        super().__init__(message)
        self.report = report


class TrainingError(ShipmlError):
    """The training configuration cannot be built or fitted."""


class RegistryError(ShipmlError):
    """The model registry refused an operation or names an unknown model/version."""

    reason = "registry"  # the `reason` label of shipml_model_load_failures_total


class ModelLoadError(ShipmlError):
    """A registered model could not be loaded or failed its integrity check."""

    reason = "load"


class IntegrityError(ModelLoadError):
    """A file of a registered version does not match the sha256 recorded at registration (or is unregistered)."""

    reason = "hash"


class SchemaChangeError(ModelLoadError):
    """A new version's schema would fail the requests of the clients of the version serving now."""

    reason = "schema"


class WarmupError(ModelLoadError):
    """A version loaded but failed its warm-up calls (raised, or answered with NaN or an infinity)."""

    reason = "warmup"


class StoreError(ShipmlError):
    """The prediction store cannot be opened or written (a server fault: 503, never the client's)."""


class StoreFull(StoreError):
    """The prediction log's queue is full: the caller should shed load (503)."""
