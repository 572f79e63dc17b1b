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


class PostgresServer:
    """A PostgreSQL server of the tests' own: its data directory, port and log, started with ``pg_ctl``, and able to
    restart (``restart``: ``pg_ctl restart -m fast``, as an operator or a failover does) or stop and start."""

    def __init__(self, bindir: Path, root: Path, settings: tuple[str, ...] = ()) -> None:
        self.bindir, self.root = bindir, root
        self.data, self.log = root / "db", root / "log"
        self.port = free_port()
        extra = "".join(f" -c {s}" for s in settings)
        self.opts = f"-p {self.port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=on{extra}"

    @property
    def uri(self) -> str:
        """The server's ``postgres`` database as the user ``shipml`` (no password: trust on loopback)."""
        return f"postgresql+psycopg://shipml@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        argv = [str(self.bindir / "pg_ctl"), "-D", str(self.data), *args]
        return subprocess.run(_as_postgres(argv), capture_output=True, text=True, check=False, timeout=120)

    def start(self) -> None:
        done = self._ctl("-o", self.opts, "-l", str(self.log), "-w", "start")
        if done.returncode != 0:
            missing(f"PostgreSQL did not start: {done.stderr.strip()[-300:]}")

    def stop(self) -> None:
        self._ctl("-m", "fast", "-w", "stop")

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: every connection is closed, the server is down until it has started again."""
        done = self._ctl("-o", self.opts, "-l", str(self.log), "-m", "fast", "-w", "restart")
        assert done.returncode == 0, done.stderr[-300:]


def start_postgres(settings: tuple[str, ...] = ()) -> PostgresServer:
    """A new PostgreSQL server (initdb, start) in a temporary directory, or the test skips (fails in the scale lane)
    saying what is missing. ``settings``: ``name=value`` server settings (``max_connections=100``). Stop it and
    remove ``root`` when done (``stop_postgres``)."""
    bindir = _bindir()
    if bindir is None:
        missing("PostgreSQL is not installed (Debian: apt-get install postgresql; `make test` does it as root)")
    root = Path(tempfile.mkdtemp(prefix="shipml-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    server = PostgresServer(bindir, root, settings)
    init = subprocess.run(
        _as_postgres([str(bindir / "initdb"), "-D", str(server.data), "-U", "shipml", "--auth=trust", "-E", "UTF8"]),
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if init.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        missing(f"initdb failed: {init.stderr.strip()[-300:]}")
    server.start()
    return server


def stop_postgres(server: PostgresServer) -> None:
    server.stop()
    shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The session's PostgreSQL server (shared: a test that restarts or fills it starts its own, ``start_postgres``)."""
    server = start_postgres()
    try:
        yield server
    finally:
        stop_postgres(server)


@pytest.fixture(scope="session")
def postgres_uri(postgres_server: PostgresServer) -> str:
    return postgres_server.uri
