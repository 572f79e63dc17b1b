"""The exception hierarchy: every error a user can cause is a ``ShipmlError``, raised where it is detected.

```
ShipmlError                 exit 2 unless said otherwise
  ConfigError               a key of the config, a flag or an environment override (one line per problem)
  DataLoadError             a data file missing, unreadable or of an unknown format
  SchemaError               a feature schema malformed or not fitting the data
  DataValidationError       data failing validation (its report holds every failed check); HTTP 422
  TrainingError             training that cannot be built or fitted
  RegistryError             the registry refused, or names an unknown model or version; HTTP 503
    ConcurrentPromotion     a promotion overtaken by another one of the same alias (exit 1)
  ModelLoadError            a version that cannot be loaded; HTTP 503
    IntegrityError          a file that does not match its registered sha256
    SchemaChangeError       a new version that would fail the serving version's clients
    WarmupError             a version failing its warm-up calls
  StoreError                the prediction store cannot be opened, read or written; HTTP 503
    StoreFull               the prediction log's queue is full (shed load); HTTP 503
  CanaryRefused             `deploy canary`/`abort` that cannot act (another canary active, none active...)
  PromotionRefused          `ab promote` without a ship verdict (exit 1)
  PruneRefused              `store prune` whose cut is inside the label delay, or under a running canary or experiment
```

The CLI prints a ``ShipmlError`` as its lines and exits with its ``exit_code`` (cli/app.py); the server answers
with the status of its class (server/errors.py), 500 for anything else. This module imports nothing from the
package, so every layer can raise these.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Finding(Protocol):
    """One failed check of a validation report (``core.validation.ValidationIssue``), as it is printed."""

    @property
    def column(self) -> str: ...
    @property
    def label(self) -> str: ...
    @property
    def failing(self) -> int: ...
    @property
    def examples(self) -> Sequence[str]: ...
    @property
    def severity(self) -> str: ...


class Findings(Protocol):
    """What validation found in one data set (``core.validation.ValidationReport``), as it is printed."""

    @property
    def source(self) -> str: ...
    @property
    def rows(self) -> int: ...
    @property
    def columns(self) -> int: ...
    @property
    def issues(self) -> Sequence[Finding]: ...
    @property
    def passed(self) -> bool: ...
    @property
    def errors(self) -> Sequence[Finding]: ...


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

    def __init__(self, message: str, report: Findings) -> None:
        super().__init__(message)
        self.report = report


class TrainingError(ShipmlError):
    """The training configuration cannot be built or fitted."""


class RegistryError(ShipmlError):
    """The model registry refused an operation or names an unknown model/version."""

    reason = "registry"  # the `reason` label of shipml_model_load_failures_total


class ConcurrentPromotion(RegistryError):
    """An alias move overtaken by a concurrent one: both are in the history, the other holds the alias (exit 1: the
    command did what it was asked, someone else moved the alias after it)."""

    exit_code = 1


class SparkError(ShipmlError):
    """Spark could not run a job: no master at the address, or the job failed (the reason on one line)."""


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


class StoredReportUnreadable(StoreError):
    """A stored report's JSON cannot be read back as its report (written by an incompatible version, or damaged)."""


class CanaryRefused(ShipmlError):
    """A canary that cannot start or stop: another is active, the candidate is what serves already, none is active
    to abort, or it is being promoted."""


class PruneRefused(ShipmlError):
    """`store prune` (or its schedule) that would remove what is still needed: predictions within the label delay,
    or any while a canary or an experiment runs (its evidence)."""


class PromotionRefused(ShipmlError):
    """`ab promote` without a ship verdict for the variant, and without --force."""

    exit_code = 1
