"""Workspace: what every job works in, composed once: the settings, the prediction store opened with exactly the
service's store settings, the registry, and the cache of loaded versions.

The CLI opens one per command (``with Workspace.open(settings) as ws``, or ``close()`` once when done); the service
builds one around the store and registry it already holds (``Workspace(settings, store, registry)``, never closed:
the service closes its store itself).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from shipml.adapters.registry import MlflowRegistry
from shipml.adapters.store import PredictionStore
from shipml.config import Settings


@dataclass(frozen=True)
class Workspace:
    """The settings, the store, the registry, and ``cache_dir`` (``<home>/cache``) for a job."""

    settings: Settings
    store: PredictionStore
    registry: MlflowRegistry

    @property
    def cache_dir(self) -> Path:
        return Path(self.settings.home) / "cache"

    @classmethod
    def open(cls, settings: Settings) -> Workspace:
        """The workspace of ``settings``: its store opened as the service opens it (``PredictionStore.open``)."""
        store = PredictionStore.open(settings.store)
        try:
            return cls(settings, store, MlflowRegistry(settings.registry))
        except BaseException:
            store.close()
            raise

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Workspace:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
