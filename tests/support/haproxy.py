"""A real haproxy (Debian's package) in front of three shipml replicas on loopback, run with the configuration
users copy (deploy/haproxy/haproxy.cfg: active health checks on /health/ready every 500 ms, X-Forwarded-For,
pooled connections to the replicas) and the addresses in its environment; a second file adds an admin socket,
which tells the tests which replicas haproxy sees up."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.support.components import missing
from tests.support.server import free_port

REPO = Path(__file__).parents[2]
SHIPPED = REPO / "deploy" / "haproxy" / "haproxy.cfg"  # the file users copy, as it is
SECTION = "### Replicas behind a load balancer"
ADMIN = """\
global
    stats socket {socket} mode 600 level admin
"""


def binary() -> str:
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/sbin")
    if found is None:
        missing("haproxy is not installed (Debian: apt-get install haproxy; `make system-deps` does it as root)")
    return found


def readme_section() -> str:
    return (REPO / "README.md").read_text().split(SECTION, 1)[1].split("\n## ", 1)[0]


def readme_command() -> tuple[list[str], list[str]]:
    """The README's haproxy line as a shell splits it: the variables it sets (names) and the command."""
    block = re.search(r"```bash\n(.*?)```", readme_section(), re.S)
    assert block is not None, f"README.md: no bash block under {SECTION!r}"
    words = shlex.split(block.group(1).replace("\\\n", " "))
    names = [w.split("=", 1)[0] for w in words if "=" in w and not w.startswith("-")]
    return names, words[len(names) :]


def readme_serve_settings() -> dict[str, object]:
    """The README's `serve:` settings for each replica behind the proxy."""
    block = re.search(r"```yaml\n(.*?)```", readme_section(), re.S)
    assert block is not None, f"README.md: no yaml block under {SECTION!r}"
    return dict(yaml.safe_load(block.group(1))["serve"])


@dataclass
class Haproxy:
    url: str
    proc: subprocess.Popen[bytes]
    socket_path: Path
    config: Path

    def states(self) -> dict[str, str]:
        """Each replica's state as haproxy sees it: UP, DOWN, or a transition (``UP 1/2``...)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(str(self.socket_path))
            sock.sendall(b"show stat\n")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        lines = data.decode().splitlines()
        header = lines[0].lstrip("# ").split(",")
        out = {}
        for line in lines[1:]:
            row = dict(zip(header, line.split(","), strict=False))
            if row.get("pxname") == "shipml" and row.get("svname") not in ("FRONTEND", "BACKEND", None):
                out[row["svname"]] = row["status"]
        return out

    def wait_state(self, name: str, state: str, timeout: float = 60) -> float:
        """Wait until haproxy reports replica ``name`` as ``state``; the seconds it took."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.states().get(name) == state:
                return time.monotonic() - started
            time.sleep(0.1)
        raise AssertionError(f"haproxy did not see {name} {state} within {timeout} s: {self.states()}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_haproxy(directory: Path, replicas: Sequence[tuple[str, int]]) -> Haproxy:
    """haproxy on a free loopback port in front of the three ``replicas`` (name r1..r3, port), with
    deploy/haproxy/haproxy.cfg as shipped; returns once it listens."""
    exe = binary()
    port = free_port()
    sock = directory / "haproxy.sock"
    admin = directory / "admin.cfg"
    admin.write_text(ADMIN.format(socket=sock))
    assert [name for name, _ in replicas] == ["r1", "r2", "r3"], replicas
    # the README's line as typed, from the repository's root, with this machine's addresses in its variables
    names, command = readme_command()
    assert names == ["SHIPML_LISTEN", "SHIPML_REPLICA_1", "SHIPML_REPLICA_2", "SHIPML_REPLICA_3"], names
    assert command == ["haproxy", "-f", str(SHIPPED.relative_to(REPO))], command
    env = os.environ | {"SHIPML_LISTEN": f"127.0.0.1:{port}"}
    env |= {f"SHIPML_REPLICA_{i}": f"127.0.0.1:{p}" for i, (_, p) in enumerate(replicas, start=1)}
    argv = [exe, *command[1:], "-f", str(admin)]  # and an admin socket: which replicas haproxy sees up
    checked = subprocess.run([*argv, "-c"], capture_output=True, text=True, env=env, check=False, cwd=REPO)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    log = (directory / "haproxy.log").open("ab")
    proc = subprocess.Popen([*argv, "-db"], stdout=log, stderr=log, env=env, cwd=REPO)
    log.close()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"haproxy exited: {(directory / 'haproxy.log').read_text()[-2000:]}")
        if sock.exists():
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return Haproxy(f"http://127.0.0.1:{port}", proc, sock, SHIPPED)
            except OSError:
                pass
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("haproxy did not start listening in 15 s")
