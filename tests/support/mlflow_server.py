"""A real `mlflow server` on 127.0.0.1 for a test module (SQLite backend, local artifacts, one worker), and the
two helpers every server the tests start needs: wait for its health URL, stop it."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.server import free_port
from tests.support.trained import new_registry_db


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, what: str, timeout: float = 90) -> None:
    """Until ``url`` answers 200; the test fails, with the end of ``log``, if ``proc`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode}: {log.read_text()[-2000:]}", pytrace=False)
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as r:
            if r.status == 200:
                return
        time.sleep(0.25)
    proc.kill()
    pytest.fail(f"{what} did not answer {url} in {timeout:.0f} s: {log.read_text()[-2000:]}", pytrace=False)


def stop_process(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, then SIGKILL after 20 s."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def mlflow_server(root: Path) -> Iterator[tuple[str, int]]:
    """`mlflow server` with its database and artifacts under ``root``: its URL and port, stopped afterwards.

    Without MLflow 3's job runner (a second process importing MLflow, for GenAI jobs no test uses): it halved the
    time to a healthy server (14 s against 29 s with the suite's other processes on the machine). Its database is a
    copy of a migrated one: a team's server has one, and migrating a new one is 2.3 s of CPU that is not the test's."""
    new_registry_db(root / "server.db")
    port = free_port()
    argv = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{root}/server.db",
        "--artifacts-destination", str(root / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log_path = root / "server.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_http(f"{url}/health", proc, log_path, "mlflow server")
            yield url, port
        finally:
            stop_process(proc)
