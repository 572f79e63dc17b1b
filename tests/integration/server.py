"""Start `shipml serve` as a real process on 127.0.0.1 and talk to it over HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from shipml.examples.churn import FEATURES, generate_churn
from tests.integration.cli import shipml

SHIPML = str(Path(sys.executable).parent / "shipml")
CONFIG = (Path(__file__).parents[2] / "examples/churn/shipml.yaml").read_text()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Keys:
    predict: str
    admin: str


def make_keys(root: Path) -> tuple[Keys, str]:
    """Two keys (predict-only, admin) and the auth section that accepts them."""
    lines = []
    keys = []
    for name, roles in (("app", ("predict",)), ("ops", ("predict", "admin"))):
        args = ["keys", "new", "--name", name] + [a for r in roles for a in ("--role", r)]
        made = shipml(root, *args)
        assert made.returncode == 0, made.stderr
        keys.append(made.stdout.strip())
        lines.append(next(line for line in made.stderr.splitlines() if "sha256" in line))
    return Keys(*keys), "auth:\n  keys:\n" + "\n".join("  " + line for line in lines) + "\n"


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
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


def start_server(root: Path, *args: str, env: dict[str, str] | None = None) -> Server:
    port = free_port()
    log = root / f"serve-{port}.log"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SHIPML_")} | (env or {})
    proc = subprocess.Popen(
        [SHIPML, "serve", "--port", str(port), *args], cwd=root, env=full_env,
        stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    server = Server(f"http://127.0.0.1:{port}", proc, log)
    server.wait_ready()
    return server


def records(n: int, seed: int = 21) -> list[dict[str, object]]:
    """``n`` example records as JSON-ready dicts (None for missing values)."""
    df = generate_churn(n, seed)[list(FEATURES)]
    df = df.astype(object).where(df.notna(), None)
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()} for r in df.to_dict(orient="records")]


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
