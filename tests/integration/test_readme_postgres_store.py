"""The README's "Postgres for the store", as a new user types it: the extra it names exists, and with its
`SHIPML_STORE__URI` (pointed at this test's Postgres) `shipml serve --workers 2` logs the demo's traffic there and
`shipml monitor drift --recompute` counts those rows again and judges them."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from tests.support.cli import shipml
from tests.support.dialects import fresh_postgres_database
from tests.support.project import train_project
from tests.support.server import start_server

pytestmark = [pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "examples" / "churn" / "monitor_demo.py"


def readme_commands() -> list[str]:
    """The lines of the bash block under "### Postgres for the store" (comments dropped)."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("### Postgres for the store", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block is not None, "README.md: no bash block under '### Postgres for the store'"
    return [line.split("#", 1)[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_the_readme_postgres_store_as_typed(postgres_uri: str, tmp_path: Path) -> None:
    install, export, serve, monitor = readme_commands()
    extra = re.fullmatch(r"pip install 'shipml\[(\w+)\]'", install)
    assert extra is not None, install
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert "psycopg" in " ".join(extras[extra.group(1)])  # the extra the README names installs the driver
    name, _, value = shlex.split(export.removeprefix("export "))[0].partition("=")
    assert name == "SHIPML_STORE__URI" and value.startswith("postgresql+psycopg://"), export
    env = {name: fresh_postgres_database(postgres_uri)}  # the README's URI, on this test's server
    assert env[name].startswith("postgresql+psycopg://")

    train_project(tmp_path)
    assert shlex.split(serve)[:2] == ["shipml", "serve"]
    server = start_server(tmp_path, *shlex.split(serve)[2:], env=env)
    try:
        demo = subprocess.run(
            [sys.executable, str(DEMO), "--url", server.url, "--normal", "300", "--drifted", "0"],
            capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert demo.returncode == 0, demo.stderr
    finally:
        assert server.stop() == 0
    time.sleep(1.0)  # the minute of the last prediction settles once its keeper flushed it (on stop)

    args = shlex.split(monitor)
    assert args[:3] == ["shipml", "monitor", "drift"] and "--recompute" in args
    run = shipml(tmp_path, *args[1:], "--json", env=env)
    assert run.returncode in (0, 1), run.stderr  # 0 no drift, 1 drift: both a judged window
    (segment,) = json.loads(run.stdout)["segments"]
    assert segment["rows"] == 300
