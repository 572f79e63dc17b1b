"""A shared registry as a team runs one, started on 127.0.0.1 for the tests: `mlflow server` on a Postgres database
(the session's server, tests.support.postgres) with its artifacts in S3 (moto's S3 server), proxied by the MLflow
server (``--serve-artifacts``), behind ``--allowed-hosts``.

The S3 credentials and endpoint live only in the MLflow server's environment: shipml's processes are given
``SHIPML_REGISTRY_URI`` and nothing else (``SharedRegistry.env``), and this test process never puts an ``AWS_*``
variable in its own environment. The MLflow server reaches S3 through a fault proxy (``s3``), so a test can take
S3 down (connections reset) and bring it back without losing moto's in-memory bucket; the MLflow server itself can
be stopped and started again on the same port (``restart``).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.reliability.load import FaultProxy
from tests.support.components import missing
from tests.support.dialects import fresh_postgres_database
from tests.support.mlflow_server import stop_process, wait_http
from tests.support.server import free_port

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "### A shared registry"
# moto accepts any credentials; these exist only in the MLflow server's environment (and the bucket's creation)
S3_KEY_ID, S3_SECRET, S3_REGION = "shipml-test", "shipml-test-secret", "us-east-1"


def _commands(block: str) -> list[list[str]]:
    """A bash block's commands as argv lists: continuation lines joined, comments dropped."""
    return [argv for line in block.replace("\\\n", " ").splitlines() if (argv := shlex.split(line, comments=True))]


@dataclass(frozen=True)
class ReadmeRegistry:
    """The README's shared registry as written: the server machine's lines, then every shipml machine's."""

    packages: list[str]  # `pip install ...` on the server's machine
    server_env: list[str]  # the variables exported there (the storage's credentials and endpoint)
    server: list[str]  # `mlflow server ...`
    client_env: dict[str, str]  # what a shipml machine exports
    commands: list[list[str]]  # the shipml commands shown

    @classmethod
    def read(cls) -> ReadmeRegistry:
        section = README.read_text().split(SECTION, 1)[1].split("\n#", 1)[0]
        blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
        assert len(blocks) == 2, f"README.md {SECTION!r}: expected two bash blocks, found {len(blocks)}"
        server_side, client_side = (_commands(b) for b in blocks)
        packages = [a for argv in server_side if argv[:2] == ["pip", "install"] for a in argv[2:]]
        exported = [a.split("=", 1)[0] for argv in server_side if argv[0] == "export" for a in argv[1:]]
        (server,) = [argv for argv in server_side if argv[:2] == ["mlflow", "server"]]
        client_env = dict(a.split("=", 1) for argv in client_side if argv[0] == "export" for a in argv[1:])
        commands = [argv for argv in client_side if argv[0] == "shipml"]
        return cls(packages, exported, server, client_env, commands)

    def option(self, name: str) -> str:
        return self.server[self.server.index(name) + 1]

    @property
    def bucket(self) -> str:
        destination = self.option("--artifacts-destination")
        assert destination.startswith("s3://"), destination
        return destination.removeprefix("s3://").split("/", 1)[0]


# one file's download: streamed through the server (artifacts/) or a presigned URL of the storage asked for
# (presigned/); a directory's listing (artifacts?path=) is not a download
TAPS = 3  # replicas that can count their downloads
ARTIFACT_GET = re.compile(rb"GET /api/2\.0/mlflow-artifacts/((?:artifacts|presigned)/\S+) HTTP")


class ArtifactGets:
    """The artifact downloads one client makes through its own proxy in front of the MLflow server: each
    ``GET /api/2.0/mlflow-artifacts/artifacts/<path>`` seen on the wire (a replica's share of the server's log)."""

    def __init__(self, target_port: int) -> None:
        self.proxy = CountingProxy(target_port)

    @property
    def url(self) -> str:
        return self.proxy.url

    def paths(self) -> list[str]:
        """``artifacts/<path>`` or ``presigned/<path>`` of each file download, in order."""
        return [m.decode() for m in ARTIFACT_GET.findall(bytes(self.proxy.sent))]

    def close(self) -> None:
        self.proxy.close()


class CountingProxy(FaultProxy):
    """A FaultProxy that keeps every byte its clients send (requests are small: the counting is of request lines),
    and can hold new connections until released: clients started one after the other then go on together (a
    barrier for processes, to make a race real)."""

    def __init__(self, target_port: int) -> None:
        self.sent = bytearray()
        self.held = 0  # connections that waited for a release
        self._holding = False
        self._released = asyncio.Event()
        super().__init__(target_port)

    def hold(self) -> None:
        self.held, self._holding = 0, True
        self._loop.call_soon_threadsafe(self._released.clear)

    def release(self) -> None:
        self._holding = False
        self._loop.call_soon_threadsafe(self._released.set)

    async def _handle(self, reader, writer):  # type: ignore[no-untyped-def]
        if self._holding:
            self.held += 1
            await self._released.wait()
        outer = self

        class Tap:
            async def read(self, n: int) -> bytes:
                data = await reader.read(n)
                outer.sent.extend(data)
                return data

        await super()._handle(Tap(), writer)  # type: ignore[arg-type]


@dataclass
class SharedRegistry:
    """A running `mlflow server` on Postgres and S3: its URL for ``SHIPML_REGISTRY_URI``, and its faults."""

    root: Path
    backend_uri: str
    s3: FaultProxy  # S3 as the MLflow server reaches it: ``s3.set_mode("reset")`` takes it down
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    # a replica each: its own way to the server, counting its downloads (made before the server starts, so that
    # ``--allowed-hosts`` names their addresses too)
    taps: list[ArtifactGets] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """All a shipml process is given to use the shared registry."""
        return {"SHIPML_REGISTRY_URI": self.url}

    @property
    def log(self) -> Path:
        return self.root / "mlflow-server.log"

    def client(self) -> Any:
        """shipml's registry on this server, in the test's process (what the commands open)."""
        from shipml.adapters.registry import MlflowRegistry
        from shipml.config import RegistrySettings

        return MlflowRegistry(RegistrySettings(uri=self.url))

    def argv(self) -> list[str]:
        """The README's `mlflow server` line as written, but for what is this machine's: the database (this test's
        Postgres), where it listens (loopback, a free port), the names it answers to (its own and the replicas'
        ways to it) and one worker (two cores shared by the suite)."""
        readme = ReadmeRegistry.read()
        assert readme.option("--backend-store-uri").startswith("postgresql+psycopg://"), readme.server
        assert "--serve-artifacts" in readme.server, readme.server
        hosts = [f"127.0.0.1:{self.port}", f"localhost:{self.port}", *(f"127.0.0.1:{t.proxy.port}" for t in self.taps)]
        ours = {
            "--backend-store-uri": self.backend_uri,
            "--host": "127.0.0.1",
            "--port": str(self.port),
            "--allowed-hosts": ",".join(hosts),
            "--workers": "1",
        }
        argv = [str(Path(sys.executable).parent / "mlflow"), *readme.server[1:]]
        for option, value in ours.items():
            argv[argv.index(option) + 1] = value
        return argv

    def server_env(self) -> dict[str, str]:
        """The MLflow server's environment: the only one that holds the storage's credentials and endpoint (the
        variables the README exports there, with moto's values)."""
        ours = {
            "AWS_ACCESS_KEY_ID": S3_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": S3_SECRET,
            "MLFLOW_S3_ENDPOINT_URL": self.s3.url,
        }
        assert sorted(ReadmeRegistry.read().server_env) == sorted(ours), ReadmeRegistry.read().server_env
        base = {k: v for k, v in os.environ.items() if not k.startswith(("SHIPML_", "AWS_", "MLFLOW_"))}
        return base | ours

    def start(self) -> None:
        self.starts += 1
        with self.log.open("ab") as log:
            log.write(f"--- start {self.starts}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(self.argv(), env=self.server_env(), stdout=log, stderr=subprocess.STDOUT)
        wait_http(f"{self.url}/health", self.proc, self.log, "mlflow server")

    def stop(self) -> None:
        stop_process(self.proc)

    def restart(self) -> None:
        self.stop()
        self.start()


def _moto(root: Path) -> tuple[subprocess.Popen[bytes], int]:
    if importlib.util.find_spec("moto") is None or importlib.util.find_spec("boto3") is None:
        missing("moto's S3 server is not installed (pip install -e '.[dev]': moto[server], boto3)")
    port = free_port()
    log = root / "moto.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out, stderr=subprocess.STDOUT,
            env={k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
        )  # fmt: skip
    wait_http(f"http://127.0.0.1:{port}/moto-api/", proc, log, "moto's S3 server")
    return proc, port


def _make_bucket(port: int, bucket: str) -> None:
    import boto3

    s3 = boto3.client(
        "s3", endpoint_url=f"http://127.0.0.1:{port}", region_name=S3_REGION,
        aws_access_key_id=S3_KEY_ID, aws_secret_access_key=S3_SECRET,
    )  # fmt: skip
    s3.create_bucket(Bucket=bucket)


@contextlib.contextmanager
def shared_registry_running(postgres_uri: str, root: Path) -> Iterator[SharedRegistry]:
    """Moto's S3 server with a bucket, a fresh Postgres database and `mlflow server` on them, stopped afterwards."""
    moto, moto_port = _moto(root)
    s3 = FaultProxy(moto_port)
    registry = SharedRegistry(root, fresh_postgres_database(postgres_uri), s3)
    registry.taps = [ArtifactGets(registry.port) for _ in range(TAPS)]
    try:
        _make_bucket(moto_port, ReadmeRegistry.read().bucket)  # the README's bucket
        registry.start()
        yield registry
    finally:
        registry.stop()
        for tap in registry.taps:
            tap.close()
        s3.close()
        stop_process(moto)
