"""Helpers of the fault, load and data cases: a bounded load generator, a TCP fault proxy, process figures.

Everything talks to 127.0.0.1 only. The load generator uses threads with one keep-alive
``http.client`` connection each (httpx is not a dependency); every loop is bounded by a request
count and a deadline, so a hung server fails the test instead of hanging it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import http.client
import json
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shipml.core.prediction import Prediction
from tests.support.project import CONFIG, TrainedProject, train_project
from tests.support.server import Keys, Server, auth, make_keys, records

SMALL = CONFIG.replace("n_estimators: 100", "n_estimators: 10").replace("cv_folds: 5", "cv_folds: 2")
HARD_STOP_S = 3600.0  # no load run lasts longer than this, whatever it is asked


def figure(case: int, **values: object) -> str:
    """Print one figure line the way `make test` shows them: ``FIGURE case NN: k=v ...``."""
    text = f"FIGURE case {case}: " + " ".join(f"{k}={v}" for k, v in values.items())
    print(text, flush=True)
    return text


# -- a project with a trained model ---------------------------------------------------------------


def make_project(root: Path, serve_yaml: str = "") -> Keys:
    """`shipml quickstart` in ``root`` (churn/1 in production), two keys, and a shipml.yaml."""
    train_project(root)
    keys, auth = make_keys()
    write_config(root, auth, serve_yaml)
    (root / "auth.yaml").write_text(auth)
    return keys


def write_config(root: Path, auth: str, serve_yaml: str = "") -> None:
    serve = "serve:\n  grace_period_s: 5\n" + "".join(f"  {line}\n" for line in serve_yaml.splitlines() if line)
    (root / "shipml.yaml").write_text(SMALL + auth + serve)


def train(root: Path) -> str:
    """Register one more version of the project's model (churn/1's settings, fitted once per test process:
    tests/support/trained.py; `shipml train` itself is tested in tests/integration/test_cli.py); its number."""
    return TrainedProject(root).train()


def registry(root: Path) -> Any:
    from shipml.adapters.registry import MlflowRegistry
    from shipml.config import RegistrySettings

    return MlflowRegistry(RegistrySettings(uri=f"sqlite:///{root}/.shipml/mlflow.db"))


def move_production(root: Path, version: str, reason: str = "reliability test") -> None:
    """Point churn@production at ``version`` the way `shipml models promote` does (in this process: fast)."""
    registry(root).move_alias("churn", "production", version, reason)


def artifact_files(root: Path, version: str) -> list[Path]:
    """The registered files of ``churn/version`` in the embedded artifact store."""
    source = registry(root).get_version("churn", version)
    run_id = source.run_id
    found = [p for p in (root / ".shipml" / "artifacts").rglob("*") if p.is_file() and run_id in str(p)]
    assert found, f"no artifact files for run {run_id}"
    return found


# -- HTTP -------------------------------------------------------------------------------------------


ROWS = records(400, seed=5)


def predict_body(i: int) -> bytes:
    return json.dumps({"features": ROWS[i % len(ROWS)]}).encode()


def batch_body(i: int, n: int = 100) -> bytes:
    lo = (i * n) % len(ROWS)
    return json.dumps({"records": (ROWS + ROWS)[lo : lo + n]}).encode()


@dataclass(frozen=True)
class Answer:
    """What one request got: a status (0 for a connection error) and what the tests check in the body."""

    status: int
    latency_s: float
    error: str = ""  # the exception of a connection error, or the error code of a JSON error body
    prediction_ids: tuple[str, ...] = ()
    version: str | None = None  # the body's model version
    header_version: str | None = None  # the X-Model-Version header
    failed_records: int = 0
    variant: str | None = None  # the body's variant (a single /predict)
    request: int = -1  # the request's number i (what ``make(i)`` was called with)


def _answer(status: int, latency: float, raw: bytes, header_version: str | None) -> Answer:
    try:
        body = json.loads(raw) if raw else {}
    except ValueError:
        return Answer(status, latency, "not_json", header_version=header_version)
    if not isinstance(body, dict):
        return Answer(status, latency, header_version=header_version)
    error = body.get("error")
    code = error.get("code", "") if isinstance(error, dict) else str(error or "")
    model = body.get("model")
    version = model.get("version") if isinstance(model, dict) else None
    if "prediction_id" in body:
        variant = model.get("variant") if isinstance(model, dict) else None
        return Answer(status, latency, code, (body["prediction_id"],), version, header_version, variant=variant)
    if isinstance(body.get("predictions"), list):  # /predict/batch
        preds = body["predictions"]
        ids = tuple(p["prediction_id"] for p in preds if isinstance(p, dict) and p.get("prediction_id"))
        return Answer(status, latency, code, ids, version, header_version, int(body.get("failed", 0)))
    return Answer(status, latency, code, version=version, header_version=header_version)


Request = tuple[str, str, bytes] | tuple[str, str, bytes, dict[str, str]]  # method, path, body[, headers]


@dataclass
class LoadResult:
    answers: list[Answer]
    seconds: float

    @property
    def sent(self) -> int:
        return len(self.answers)

    def count(self, status: int) -> int:
        return sum(1 for a in self.answers if a.status == status)

    @property
    def failed(self) -> list[Answer]:
        """Anything that is not a 200: 4xx, 5xx and connection errors."""
        return [a for a in self.answers if a.status != 200]

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0

    def statuses(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for a in self.answers:
            out[a.status] = out.get(a.status, 0) + 1
        return dict(sorted(out.items()))

    def p(self, q: float, status: int | None = 200) -> float:
        """The ``q`` quantile of latency in milliseconds (of answers with ``status``; None: all)."""
        lat = sorted(a.latency_s for a in self.answers if status is None or a.status == status)
        if not lat:
            return float("nan")
        return round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1000, 1)

    def acknowledged_ids(self) -> list[str]:
        return [pid for a in self.answers if a.status == 200 for pid in a.prediction_ids]


@dataclass
class Load:
    """``threads`` clients sending ``make(i)`` to ``base`` until ``duration_s`` or ``max_requests``.

    ``rate`` (requests/s over all threads) paces the clients; None sends as fast as answers come.
    A new connection is opened after a connection error or when the server closes one.
    """

    base: str
    make: Callable[[int], Request]
    headers: dict[str, str]
    threads: int = 4
    duration_s: float = 10.0
    max_requests: int = 1_000_000
    rate: float | None = None
    timeout_s: float = 30.0
    new_connection_each: bool = False
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)
    _counter: Iterator[int] = field(default_factory=lambda: iter(range(10**12)))
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _started: float = 0.0
    _ended: float = 0.0

    def start(self) -> Load:
        self._started = time.monotonic()
        self._deadline = self._started + min(self.duration_s, HARD_STOP_S)
        for k in range(self.threads):
            t = threading.Thread(target=self._client, args=(k,), name=f"load-{k}", daemon=True)
            t.start()
            self._workers.append(t)
        return self

    def stop(self) -> LoadResult:
        self._stop.set()
        return self.wait()

    def wait(self) -> LoadResult:
        for t in self._workers:
            t.join(timeout=self.timeout_s + 5)
        self._ended = time.monotonic()
        with self._lock:
            return LoadResult(list(self.answers), self._ended - self._started)

    def run(self) -> LoadResult:
        return self.start().wait()

    def _next(self) -> int | None:
        with self._lock:
            i = next(self._counter)
        return i if i < self.max_requests else None

    def _client(self, k: int) -> None:
        host, port = self.base.removeprefix("http://").split(":")
        conn: http.client.HTTPConnection | None = None
        interval = self.threads / self.rate if self.rate else 0.0
        slot = time.monotonic() + interval * k / max(1, self.threads)
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            if interval:
                now = time.monotonic()
                if slot > now:
                    time.sleep(min(slot - now, max(0.0, self._deadline - now)))
                    if self._stop.is_set() or time.monotonic() >= self._deadline:
                        break
                slot = max(slot + interval, time.monotonic() - interval)  # behind: no burst to catch up
            i = self._next()
            if i is None:
                break
            method, path, body, *more = self.make(i)  # a fourth item: this request's own headers
            if conn is None:
                conn = http.client.HTTPConnection(host, int(port), timeout=self.timeout_s)
            started = time.monotonic()
            try:
                headers = self.headers | {"Content-Type": "application/json"} | (more[0] if more else {})
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                raw = resp.read()
                answer = _answer(resp.status, time.monotonic() - started, raw, resp.getheader("x-model-version"))
                if resp.getheader("connection", "").lower() == "close" or self.new_connection_each:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                answer = Answer(0, time.monotonic() - started, type(exc).__name__)
                if conn is not None:
                    conn.close()
                conn = None
            with self._lock:
                self.answers.append(dataclasses.replace(answer, request=i))
        if conn is not None:
            conn.close()


def predict_load(server: Server, key: str, **kw: Any) -> Load:
    return Load(server.url, lambda i: ("POST", "/predict", predict_body(i)), auth(key), **kw)


def get_json(server: Server, path: str, key: str | None = None, timeout: float = 10) -> tuple[int, Any]:
    import requests

    r = requests.get(f"{server.url}{path}", headers=auth(key) if key else {}, timeout=timeout)
    try:
        return r.status_code, r.json()
    except ValueError:
        return r.status_code, r.text


def metric(server: Server, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` (a full sample name, e.g. ``shipml_store_errors_total``) whose
    labels include ``labels``."""
    import requests

    text = requests.get(f"{server.url}/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        sample, _, value = line.rpartition(" ")
        head = sample.split("{", 1)
        if head[0] != name:
            continue
        if all(f'{k}="{v}"' in sample for k, v in labels.items()):
            total += float(value)
    return total


# -- processes ---------------------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            out += [int(c) for c in (task / "children").read_text().split()]
    return out


def worker_pids(server: Server) -> list[int]:
    """The uvicorn worker processes of a ``--workers N`` server (not multiprocessing's helpers, nor the store's host
    writer: ``host_writer_pid``)."""
    pids = []
    for pid in children(server.proc.pid):
        with contextlib.suppress(OSError):
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            if b"resource_tracker" not in cmd and b"host_writer" not in cmd:
                pids.append(pid)
    return sorted(pids)


def host_writer_pid(server: Server) -> int | None:
    """The store's host writer process of a ``--workers N`` server on SQLite (adapters/store/host_writer.py)."""
    for pid in children(server.proc.pid):
        with contextlib.suppress(OSError):
            if b"host_writer" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
    return None


def wait_for_workers(server: Server, n: int, timeout: float = 60, exclude: set[int] | None = None) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = [p for p in worker_pids(server) if p not in (exclude or set())]
        if len(pids) >= n:
            return pids
        time.sleep(0.2)
    raise AssertionError(f"{n} workers not running after {timeout} s: {worker_pids(server)}")


@dataclass(frozen=True)
class ProcFigures:
    rss_kb: int
    fds: int
    threads: int


def proc_figures(pid: int) -> ProcFigures:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return ProcFigures(
        int(fields["VmRSS"].split()[0]), len(os.listdir(f"/proc/{pid}/fd")), int(fields["Threads"].strip())
    )


# -- a TCP proxy that injects faults ---------------------------------------------------------------------


class FaultProxy:
    """A TCP proxy on 127.0.0.1 in front of ``target_port``, in its own thread and event loop.

    ``mode`` is read per connection: "pass" forwards, "delay" waits ``delay_s`` before forwarding
    anything (a registry that hangs), "reset" closes the client's connection with a TCP RST.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.mode = "pass"
        self.delay_s = 30.0
        self.connections = 0
        self._open: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="fault-proxy", daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "proxy did not start"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_mode(self, mode: str) -> None:
        """Switch the fault; a fault also cuts the connections open now (a client's pooled keep-alive
        connection would otherwise never see it)."""
        self.mode = mode
        if mode != "pass":
            self._loop.call_soon_threadsafe(self._cut_all)

    def _cut_all(self) -> None:
        for writer in list(self._open):
            _reset(writer)
        self._open.clear()

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = int(self._server.sockets[0].getsockname()[1])
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        mode = self.mode
        if mode == "reset":
            _reset(writer)
            return
        self._open.add(writer)
        if mode == "delay":
            await asyncio.sleep(self.delay_s)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(OSError):
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._open.discard(writer)

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0), as a crashed or firewalled peer does."""
    sock = writer.get_extra_info("socket")
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.close()


def store_rows(root: Path, ids: list[str], uri: str | None = None) -> dict[str, Prediction]:
    """The stored predictions of ``ids`` (through the store's own API), by id."""
    from shipml.adapters.store import PredictionStore

    store = PredictionStore(uri or f"sqlite:///{root}/.shipml/predictions.db")
    try:
        return {pid: row for pid in ids if (row := store.predictions.get(pid)) is not None}
    finally:
        store.close()


def store_count(root: Path, uri: str | None = None) -> int:
    from shipml.adapters.store import PredictionStore

    store = PredictionStore(uri or f"sqlite:///{root}/.shipml/predictions.db")
    try:
        return store.predictions.count()
    finally:
        store.close()


def feedback_labels(ids: list[str], uri: str) -> dict[str, str | None]:
    """The feedback label recorded for each of ``ids`` that has feedback (through the store's API)."""
    from shipml.adapters.store import PredictionStore

    store = PredictionStore(uri)
    try:
        return {pid: fb.label for pid in ids if (fb := store.feedback.get(pid)) is not None}
    finally:
        store.close()


def integrity_check(db: Path) -> str:
    import sqlite3

    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
