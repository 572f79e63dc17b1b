"""Shared fixtures: a clean environment, the example data, a registry in a temporary directory."""

from __future__ import annotations

import gc
import os

# One OpenMP (and OpenBLAS) thread per process, set before numpy and scikit-learn load and inherited by every
# process a test starts: the suite runs more processes than the machine has cores, and an idle OpenMP thread spins
# for work, so each HistGradientBoosting fit (the fast path's tests, the monitor's domain classifier) burnt CPU the
# other processes needed (a third more CPU, and more wall time, for three concurrent runs of the fast path's tests).
os.environ.setdefault("OMP_NUM_THREADS", "1")

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from shipml.core.quiet_imports import freeze_heap
from shipml.examples.churn import generate_churn
from tests.support.project import TrainedProject, train_project

# fixtures defined beside their helpers, for every test module
pytest_plugins = ["tests.support.postgres"]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No SHIPML_* from the machine leaks into a test (SHIPML_STATS_SCALE sizes the statistics suite's run, and
    is not shipml's setting: `make stats` sets it)."""
    for key in list(os.environ):
        if key.startswith("SHIPML_") and key != "SHIPML_STATS_SCALE":
            monkeypatch.delenv(key)


@pytest.fixture
def churn_df() -> pd.DataFrame:
    return generate_churn(2_000, seed=7)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh project directory as the current directory."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def churn_csv(workdir: Path, churn_df: pd.DataFrame) -> Path:
    path = workdir / "churn.csv"
    churn_df.to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def trained_project(tmp_path_factory: pytest.TempPathFactory) -> TrainedProject:
    """churn/1 in production (2,000 rows, a small forest), trained once per session (per xdist worker), shared
    read-only: a module takes a directory of its own with ``trained_project.workspace(...)``. Modules that add
    versions or damage artifacts make their own with ``train_project``."""
    return train_project(tmp_path_factory.mktemp("trained-churn"))


# Tiers whose modules start real processes (servers, trained projects, PostgreSQL, Prometheus, Chromium).
PROCESS_TIERS = ("integration", "reliability", "e2e")
FIRST = ("test_33_44_faults.py",)


def _tier(item: pytest.Item) -> str:
    parts = Path(str(item.path)).relative_to(Path(__file__).parent).parts
    return parts[0] if len(parts) > 1 else ""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The order is pytest-xdist's schedule in `make test` (``--dist loadscope --no-loadscope-reorder``: each
    module runs whole on one worker, modules handed out in this order): the modules that start real processes
    and the statistics simulations (CPU-bound, they fill the cores while the process tiers wait on their
    servers), then the unit tests, which fill the workers' gaps at the end. First of all the one module twice as
    long as any other (the faults catalogue, 18 real-process cases: 6 and 8 minutes in two runs on a busy machine), so it
    does not start late and run on alone at the end (in file order it was handed out 36th)."""

    def rank(item: pytest.Item) -> int:
        if Path(str(item.path)).name in FIRST:
            return 0
        return 1 if _tier(item) in (*PROCESS_TIERS, "statistics", "scale") else 2

    items.sort(key=rank)


def pytest_sessionstart(session: pytest.Session) -> None:
    """The collection's imports (the test modules and what they import) with the cyclic collector paused, as
    shipml's command line imports (shipml.core.quiet_imports.collector_paused); turned back on below."""
    gc.disable()


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    """What the imports and the collection made lives until the test process ends (libraries, test modules, the
    items): frozen out of the cyclic collector's reach (``gc.freeze``), so that the full collections the tests'
    allocations trigger do not walk it again each time (about 0.3 s each in a process that imported MLflow)."""
    freeze_heap(collect=True)
    gc.enable()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The figures the reliability tests print (lines starting ``FIGURE``), gathered at the end of the run,
    so `make test` shows them whatever pytest captured."""
    lines = []
    for outcome in ("passed", "failed", "xfailed", "xpassed"):
        for report in terminalreporter.stats.get(outcome, []):
            text = getattr(report, "capstdout", "") or ""
            lines += [line for line in text.splitlines() if line.startswith("FIGURE")]
    if lines:
        terminalreporter.section("figures")
        for line in lines:
            terminalreporter.write_line(line)
