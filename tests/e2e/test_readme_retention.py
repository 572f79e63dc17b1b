"""The README's "Retention and prune", command by command, as a user types it: the dry run changes nothing, the
prune removes the predictions older than 90 days, and with the section's `store.retention` in shipml.yaml the
prune without `--older-than` takes its cut."""

from __future__ import annotations

import re
import shlex
import time
from pathlib import Path

import pytest

from shipml.adapters.store import PredictionStore
from tests.support.cli import shipml
from tests.support.logged import logged
from tests.unit.adapters.test_store_retention import OUTPUTS, ids_at

pytestmark = [pytest.mark.integration]
REPO = Path(__file__).resolve().parents[2]
DAY = 86_400.0


def section() -> str:
    readme = (REPO / "README.md").read_text()
    return readme.split("### Retention and prune", 1)[1].split("\n## ", 1)[0]


def commands() -> list[list[str]]:
    block = re.search(r"```bash\n(.*?)```", section(), re.S)
    assert block is not None
    return [shlex.split(line) for line in block.group(1).splitlines() if line.strip()]


def write(root: Path, days_old: float, n: int) -> None:
    store = PredictionStore(f"sqlite:///{root}/.shipml/predictions.db")
    ts = time.time() - days_old * DAY
    store.predictions.write([[logged(i, ts, "churn", "1", "main", {}, OUTPUTS, 0.5) for i in ids_at(ts, n)]])
    store.close()


def count(root: Path) -> int:
    store = PredictionStore(f"sqlite:///{root}/.shipml/predictions.db")
    try:
        return store.predictions.count()
    finally:
        store.close()


def test_the_retention_section_works_as_written(tmp_path: Path) -> None:
    write(tmp_path, 120, 40)
    write(tmp_path, 1, 10)
    dry, prune = commands()
    assert dry == ["shipml", "store", "prune", "--older-than", "90d", "--dry-run"]
    result = shipml(tmp_path, *dry[1:])
    assert result.returncode == 0, result.stderr
    assert "predictions: 40 " in result.stdout and count(tmp_path) == 50
    result = shipml(tmp_path, *prune[1:])
    assert result.returncode == 0, result.stderr
    assert count(tmp_path) == 10
    yaml_block = re.search(r"```yaml\n(.*?)```", section(), re.S)
    assert yaml_block is not None
    (tmp_path / "shipml.yaml").write_text(yaml_block.group(1))
    write(tmp_path, 95, 7)
    result = shipml(tmp_path, "store", "prune")  # the config's cut: 90d
    assert result.returncode == 0, result.stderr
    assert count(tmp_path) == 10
