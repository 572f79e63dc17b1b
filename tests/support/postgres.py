"""A real PostgreSQL server (Debian's package) started for the tests, or a skip that says why."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.components import missing
from tests.support.server import free_port


def _bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _as_postgres(argv: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: run them as the `postgres` user then."""
    if os.geteuid() != 0:
        return argv
    if shutil.which("runuser") is None:
        missing("running as root without runuser: cannot start PostgreSQL as another user")
    return ["runuser", "-u", "postgres", "--", *argv]


@pytest.fixture(scope="session")
def postgres_uri() -> Iterator[str]:
    bindir = _bindir()
    if bindir is None:
        missing("PostgreSQL is not installed (Debian: apt-get install postgresql; `make test` does it as root)")
    data = Path(tempfile.mkdtemp(prefix="shipml-pg-"))
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
    port = free_port()
    init = subprocess.run(
        _as_postgres([str(bindir / "initdb"), "-D", str(data / "db"), "-U", "shipml", "--auth=trust", "-E", "UTF8"]),
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if init.returncode != 0:
        missing(f"initdb failed: {init.stderr.strip()[-300:]}")
    opts = f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=on"
    start = subprocess.run(
        _as_postgres([str(bindir / "pg_ctl"), "-D", str(data / "db"), "-o", opts, "-l", str(data / "log"), "-w", "start"]),
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if start.returncode != 0:
        missing(f"PostgreSQL did not start: {start.stderr.strip()[-300:]}")
    try:
        yield f"postgresql+psycopg://shipml@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            _as_postgres([str(bindir / "pg_ctl"), "-D", str(data / "db"), "-m", "fast", "stop"]),
            capture_output=True,
            check=False,
        )
        shutil.rmtree(data, ignore_errors=True)
