"""What many tests repeat before they test anything, done once per test process:

- ``fit_once``: a training run (``pipelines.train.fit``) of the same settings on a data file of the same content
  gives the same result (every step is seeded), so it is fitted once and its result handed to every test that asks
  again. The training itself is tested in tests/unit/pipelines/test_train.py, on fits of its own.
- ``new_registry_db``: a new MLflow registry database. MLflow runs its schema migrations (about 70 of them, 1.5 s of
  CPU) when it first opens an empty database; here a database migrated once is copied instead, so each test still
  gets a registry of its own, empty, at the path it names.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from shipml.config import RegistrySettings, Settings

_fits: dict[str, Any] = {}
_template: list[Path] = []

# What a fit reads of the settings (the registry, the store and the service do not change it).
_FIT_SECTIONS = ("model", "data", "training", "validation", "native")


def fit_once(settings: Settings) -> Any:
    """``fit(settings)``, from an earlier identical fit when there was one (the data file read by its content)."""
    from shipml.pipelines.train import fit

    if settings.data is None or settings.data.path is None:
        return fit(settings)
    data = Path(settings.data.path)
    raw = settings.model_dump(mode="json")
    raw["data"]["path"] = [data.name, hashlib.sha256(data.read_bytes()).hexdigest()]
    key = json.dumps({k: raw.get(k) for k in _FIT_SECTIONS}, sort_keys=True, default=str)
    if key not in _fits:
        _fits[key] = fit(settings)
    return _fits[key]


def train_and_register_once(settings: Settings, registry: Any) -> Any:
    """``train_and_register``, with the fit from ``fit_once``: a new version in ``registry`` each call."""
    from shipml.pipelines.train import register_trained

    return register_trained(settings, registry, fit_once(settings))


def new_registry_db(path: Path) -> str:
    """An empty, migrated MLflow database at ``path`` (a copy of one made once); its URI."""
    if not _template:
        from shipml.adapters.registry import MlflowRegistry

        where = Path(tempfile.mkdtemp(prefix="shipml-test-mlflow-"))
        made = MlflowRegistry(RegistrySettings(uri=f"sqlite:///{where}/mlflow.db", artifact_root=str(where / "a")))
        made.close()
        _template.append(where / "mlflow.db")
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_template[0], path)
    return f"sqlite:///{path}"
