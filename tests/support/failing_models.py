"""A model wrapper for tests: versions named in ``SHIPML_TEST_FAILING`` (``churn/2=0.05,...``) fail that share of their
calls, as a broken candidate would. Installed in a server process through a ``sitecustomize`` module (``install``), so
every worker process of ``shipml serve`` gets it, and nothing else in the service changes."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

SITECUSTOMIZE = "from tests.support.failing_models import install\ninstall()\n"


class FailingPredictor:
    """Every ``round(1 / rate)``-th call raises, after the first ``warm_calls`` (the load's warm-up passes)."""

    def __init__(self, inner: Any, rate: float, warm_calls: int = 5) -> None:
        self._inner = inner
        self._every = max(1, round(1.0 / rate))
        self._calls = -warm_calls

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def predict(self, rows: Any) -> Any:
        self._calls += 1
        if self._calls > 0 and self._calls % self._every == 0:
            raise RuntimeError("injected failure of a broken candidate")
        return self._inner.predict(rows)


def install() -> None:
    failing = dict(item.split("=", 1) for item in os.environ.get("SHIPML_TEST_FAILING", "").split(",") if item)
    if not failing:
        return
    from shipml.server import model_manager

    load = model_manager.load_bundle

    def load_bundle(registry: Any, ref: Any, *args: Any, **kwargs: Any) -> Any:
        bundle = load(registry, ref, *args, **kwargs)
        rate = failing.get(f"{bundle.info.name}/{bundle.info.version}")
        return replace(bundle, predictor=FailingPredictor(bundle.predictor, float(rate))) if rate else bundle

    model_manager.load_bundle = load_bundle


def site_dir(root: Path) -> Path:
    """A directory holding the ``sitecustomize`` that installs the wrapper (put it first on PYTHONPATH)."""
    site = root / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    return site
