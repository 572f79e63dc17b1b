"""Trained projects made in this process: the layout `shipml quickstart` leaves (``.shipml/mlflow.db``,
``.shipml/artifacts``, ``.shipml/data/churn.csv``, churn/1 in production), with a small forest and two CV folds,
so that a test pays a second or two instead of a quickstart in a fresh interpreter.

MLflow records absolute artifact URIs: a project is shared by pointing at its directory (``Workspace``), never
copied.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from shipml.adapters.files import AtomicTableWriter
from shipml.config import Settings, settings_from_mapping
from shipml.examples.churn import churn_config, generate_churn
from tests.support.trained import new_registry_db, train_and_register_once

SMALL_FOREST = {"n_estimators": 20, "max_depth": 6, "n_jobs": 1}
CONFIG_FILE = Path(__file__).parents[2] / "examples" / "churn" / "shipml.yaml"
CONFIG = CONFIG_FILE.read_text()  # the example's shipml.yaml, as a user has it


def churn_settings(data_file: Path, **overrides: Any) -> Settings:
    """The example config, pointed at ``data_file``, with a small forest and 3 CV folds for speed;
    ``overrides`` update whole sections (``training={"seed": 3}``)."""
    raw = yaml.safe_load(churn_config())
    raw["data"]["path"] = str(data_file)
    raw["model"]["params"] = dict(SMALL_FOREST)
    raw["training"]["cv_folds"] = 3
    for section, values in overrides.items():
        if isinstance(values, dict) and isinstance(raw.get(section), dict):
            raw[section].update(values)
        else:
            raw[section] = values
    return settings_from_mapping(raw, "test")


@dataclass(frozen=True)
class TrainedProject:
    """A directory laid out as after `shipml quickstart`: run ``shipml`` in ``root`` (with a shipml.yaml whose
    registry and data are the defaults) and it finds churn/1 in production."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / ".shipml" / "data" / "churn.csv"

    @property
    def registry_uri(self) -> str:
        return f"sqlite:///{self.root}/.shipml/mlflow.db"

    def settings(self, **overrides: Any) -> Settings:
        """The project's training settings (absolute paths: usable from any directory)."""
        return churn_settings(
            self.data,
            training={"cv_folds": 2},
            registry={"uri": self.registry_uri, "artifact_root": str(self.root / ".shipml" / "artifacts")},
            **overrides,
        )

    def registry(self) -> Any:
        from shipml.adapters.registry import MlflowRegistry

        database = self.root / ".shipml" / "mlflow.db"
        if not database.exists():
            new_registry_db(database)
        return MlflowRegistry(self.settings().registry)

    def train(self, **overrides: Any) -> str:
        """Train and register one more version (staging when its gates pass); its number. The fit of identical
        settings and data is made once per test process (tests/support/trained.py)."""
        return train_and_register_once(self.settings(**overrides), self.registry()).version.version

    def promote(self, version: str, to: str = "production", reason: str = "test") -> None:
        from shipml.pipelines.promote import promote

        promote(self.registry(), "churn", version, to, reason)

    def workspace(self, path: Path, extra_yaml: str = "") -> Path:
        """A directory of its own (its own ``.shipml`` home: prediction store, caches) whose shipml.yaml reads
        this project's registry and data: the way to share one trained project between modules that only
        read it. ``extra_yaml`` is appended to the example's config (auth, serve, store sections)."""
        path.mkdir(parents=True, exist_ok=True)
        (path / "shipml.yaml").write_text(self.config() + extra_yaml)
        return path

    def config(self) -> str:
        """The example's shipml.yaml pointed at this project's data and registry (from any directory)."""
        text = CONFIG.replace("path: .shipml/data/churn.csv", f"path: {self.data}")
        return text + f"registry:\n  uri: {self.registry_uri}\n"


def train_project(root: Path, rows: int = 2_000, seed: int = 42) -> TrainedProject:
    """What `shipml quickstart --rows N --seed S` leaves in ``root`` (generated data, churn/1 trained, registered
    and promoted to production), made in this process with a small forest and two CV folds."""
    project = TrainedProject(root)
    project.data.parent.mkdir(parents=True, exist_ok=True)
    with AtomicTableWriter(project.data) as writer:  # as quickstart writes it
        writer.write(generate_churn(rows, seed))
    version = project.train()
    assert version == "1", version
    project.promote(version, reason="quickstart")
    return project
