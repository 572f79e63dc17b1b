"""Issue 11's "done when": the example's experiment script runs end to end on the example, `shipml ab report` reaches
the verdict that matches the known better version, and a canary run of the worse version rolls it back. It takes
a minute and a half (a second version trained, two servers, 1,200 customers' traffic and feedback, a canary), so
it runs in the scale lane (`make test-scale`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.project import train_project

pytestmark = [pytest.mark.integration]

DEMO = Path(__file__).parents[2] / "examples" / "churn" / "experiment_demo.py"


def test_the_experiment_demo_reaches_the_right_verdict(tmp_path: Path) -> None:
    train_project(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPML_")} | {"COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, str(DEMO), "--customers", "1200"], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "verdict rollback: right" in done.stdout
    assert "canary rolled back: right" in done.stdout and "accuracy is significantly worse" in done.stdout
    assert "challenger" in done.stdout and "champion" in done.stdout
