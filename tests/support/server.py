"""Start `shipml serve` as a real process on 127.0.0.1 (forked from a warm interpreter: tests/support/launcher.py)
and talk to it over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from shipml.examples.churn import FEATURES, generate_churn
from shipml.server.auth import new_key
from tests.support.launcher import Forked, start


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Keys:
    predict: str
    admin: str


def key_line(name: str, *roles: str) -> tuple[str, str]:
    """A new key and its entry for ``auth.keys``, as `shipml keys new --name NAME --role ...` prints them."""
    key, digest = new_key()
    return key, f"    - {{name: {name}, sha256: {digest}, roles: [{', '.join(roles)}]}}\n"


def make_keys() -> tuple[Keys, str]:
    """Two keys (predict-only, admin) and the auth section that accepts them."""
    app, app_line = key_line("app", "predict")
    ops, ops_line = key_line("ops", "predict", "admin")
    return Keys(app, ops), "auth:\n  keys:\n" + app_line + ops_line


@dataclass
class Server:
    url: str
    proc: Forked | subprocess.Popen[bytes]
    log: Path

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}: {self.log.read_text()[-3000:]}")
            try:
                if requests.get(f"{self.url}/health/ready", timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"server not ready in {timeout} s: {self.log.read_text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)


def spawn_server(
    root: Path, *args: str, env: dict[str, str] | None = None, fresh: bool = False, port: int | None = None
) -> Server:
    """`shipml serve` started in ``root`` on ``port`` (default: a free one), without waiting for readiness (a case
    that starts the service while the registry is down). ``fresh``: the installed script in a new interpreter."""
    port = port or free_port()
    log = root / f"serve-{port}.log"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPML_")} | (env or {})
    proc = start(["serve", "--port", str(port), *args], root, full_env, log, fresh=fresh)
    return Server(f"http://127.0.0.1:{port}", proc, log)


def start_server(
    root: Path, *args: str, env: dict[str, str] | None = None, fresh: bool = False, port: int | None = None
) -> Server:
    """`shipml serve` in ``root``, ready."""
    server = spawn_server(root, *args, env=env, fresh=fresh, port=port)
    server.wait_ready()
    return server


def records(n: int, seed: int = 21) -> list[dict[str, object]]:
    """``n`` example records as JSON-ready dicts (None for missing values)."""
    df = generate_churn(n, seed)[list(FEATURES)]
    df = df.astype(object).where(df.notna(), None)
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in df.to_dict(orient="records")]


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
