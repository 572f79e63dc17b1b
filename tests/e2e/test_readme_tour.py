"""The README's tour, command by command, as a new user types it after `make quickstart`."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.cli import shipml
from tests.support.trained import new_registry_db

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


def tour_commands() -> list[list[str]]:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## A 5-minute tour", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block is not None
    commands = []
    for line in block.group(1).splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("source "):
            commands.append(shlex.split(line))
    return commands


def test_the_tour_works_as_written(tmp_path: Path) -> None:
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    quick = shipml(tmp_path, "quickstart")
    assert quick.returncode == 0, quick.stderr
    commands = tour_commands()
    assert commands[0][0] == "shipml" and ["shipml", "ui"] in commands
    for argv in commands:
        if argv == ["shipml", "ui"]:
            continue  # a server: started below
        result = shipml(tmp_path, *argv[1:])
        assert result.returncode == 0, (argv, result.stdout, result.stderr)
    history = shipml(tmp_path, "models", "history", "churn").stdout
    assert "checking the rollback" in history
    aliases = shipml(tmp_path, "models", "list").stdout
    assert "│ churn │ 2      │ 1          │ 2       │ 2        │" in aliases


def test_ui_serves_mlflow_on_loopback(tmp_path: Path) -> None:
    """`shipml ui` in a project (the tour runs it after the quickstart): MLflow's UI on loopback, on the project's
    registry database (an empty migrated one here: migrating a new one is MLflow's, and the quickstart's tests')."""
    new_registry_db(tmp_path / ".shipml" / "mlflow.db")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = str(Path(sys.executable).parent / "shipml")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPML_")}
    proc = subprocess.Popen(
        [exe, "ui", "--port", str(port)], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        # MLflow's server starts: seconds on a quiet machine, a minute or more when the suite's other processes
        # share its two cores
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                time.sleep(0.5)
        else:
            pytest.fail("shipml ui did not answer in 180 s")
        search = urllib.request.Request(
            f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow/experiments/search",
            data=json.dumps({"max_results": 10}).encode(), headers={"Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(search, timeout=10) as r:
            names = [e["name"] for e in json.loads(r.read())["experiments"]]
        assert names == ["Default"]  # the project's database, read through the UI's API
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
