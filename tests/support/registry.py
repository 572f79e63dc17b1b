"""Stand-ins for the registry where a test needs its ``load`` and nothing else."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from shipml.adapters.mlflow_registry import LoadedModel, ModelRef, VersionInfo
from tests.support.fitted import forest


class FakeRegistry:
    """The registry's ``load``: a version's files in a directory, as after the integrity check; its pipeline is
    the small forest of tests.support.fitted (fitted when first loaded)."""

    def __init__(self, local_dir: Path, tags: dict[str, str]) -> None:
        self.local_dir = local_dir
        self.tags = tags

    def load(self, ref: ModelRef, cache_dir: Path) -> LoadedModel:
        info = VersionInfo("churn", "3", "run", datetime(2026, 1, 1, tzinfo=UTC), (), self.tags)
        return LoadedModel(info, self.local_dir, lambda: forest()[0])
