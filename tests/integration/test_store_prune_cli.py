"""`shipml store prune` as a user types it (issue 18, item 5): a dry run changes nothing, a prune removes what is
older than the cut, and a cut inside the label delay or under a running canary or experiment is refused with one
line naming it (exit 2), nothing opened or removed."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from shipml.adapters.store import PredictionStore
from shipml.core.canary import Canary
from tests.support.cli import one_error_line, shipml
from tests.unit.adapters.test_store_retention import OUTPUTS, ids_at

pytestmark = pytest.mark.integration

DAY = 86_400.0


def project(tmp_path: Path, extra: str = "") -> PredictionStore:
    """A config whose store holds 30 predictions 100 days old and 20 from today."""
    (tmp_path / "shipml.yaml").write_text(f"store:\n  uri: sqlite:///{tmp_path}/store.db\n{extra}")
    from tests.support.logged import logged

    store = PredictionStore(f"sqlite:///{tmp_path}/store.db")
    now = time.time()
    for ts, n in ((now - 100 * DAY, 30), (now, 20)):
        store.predictions.write([[logged(i, ts, "churn", "1", "main", {}, OUTPUTS, 0.5) for i in ids_at(ts, n)]])
    return store


def test_a_dry_run_changes_nothing_and_a_prune_removes_what_is_older(tmp_path: Path) -> None:
    store = project(tmp_path)
    dry = shipml(tmp_path, "store", "prune", "--older-than", "90d", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would remove" in dry.stdout and "predictions: 30 " in dry.stdout and "dry run in" in dry.stdout
    assert store.predictions.count() == 50
    done = shipml(tmp_path, "store", "prune", "--older-than", "90d")
    assert done.returncode == 0, done.stderr
    assert "removed" in done.stdout and "predictions: 30 " in done.stdout and "pruned in" in done.stdout
    assert store.predictions.count() == 20
    store.close()


def test_the_schedules_retention_is_the_default_cut(tmp_path: Path) -> None:
    store = project(tmp_path, "  retention:\n    predictions: 30d\n")
    done = shipml(tmp_path, "store", "prune")
    assert done.returncode == 0, done.stderr
    assert store.predictions.count() == 20
    store.close()


@pytest.mark.parametrize(
    ("extra", "args", "expected"),
    [
        ("", (), "error: --older-than: required (store.retention.predictions is not set), e.g. --older-than 90d"),
        ("", ("--older-than", "90x"), "error: --older-than: expected a positive duration such as 30m, 24h or 7d, "
         "got '90x'"),
        ("monitor:\n  label_delay_s: 604800\n", ("--older-than", "2d"), "error: --older-than 2d: inside the label "
         "delay (monitor.label_delay_s: 604800 s): predictions that young still wait for their feedback"),
        ("serve:\n  variants:\n    - {name: a, model: churn/1, weight: 0.5}\n    - {name: b, model: churn/2, weight: "
         "0.5}\n", ("--older-than", "90d"), "error: --older-than 90d: an experiment is running "
         "(serve.variants/serve.shadow: a, b); prune once it has ended"),
    ],
)  # fmt: skip
def test_a_cut_that_is_refused_says_why_and_removes_nothing(
    tmp_path: Path, extra: str, args: tuple[str, ...], expected: str
) -> None:
    (tmp_path / "shipml.yaml").write_text(f"store:\n  uri: sqlite:///{tmp_path}/store.db\n{extra}")
    assert one_error_line(shipml(tmp_path, "store", "prune", *args)) == expected
    assert not (tmp_path / "store.db").exists()  # refused before the store was opened


def test_a_running_canary_refuses_the_prune(tmp_path: Path) -> None:
    store = project(tmp_path)
    started = time.time() - 600
    canary = Canary("churn", "2", "main", (5.0, 50.0, 100.0), 600.0, None, started, started)
    assert store.canaries.save(canary, expect=None) is not None
    line = one_error_line(shipml(tmp_path, "store", "prune", "--older-than", "90d"))
    assert line.startswith("error: --older-than 90d: the canary of 'churn' (version 2, running since ")
    assert line.endswith(") is running; prune once it has ended (shipml deploy status)")
    assert store.predictions.count() == 50
    store.close()
