"""Helpers of the store's scale tests: replicas of `shipml serve --workers N` on one Postgres store, a keyed load
over all of them that records each answer with its time, and the store's ids read back."""

from __future__ import annotations

import collections
import http.client
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import requests

from shipml.adapters.store import PredictionStore
from tests.reliability.load import ROWS
from tests.support.server import Server, auth, spawn_server

HARD_STOP_S = 600.0  # no load runs longer than this, whatever it is asked


def figure(name: str, **values: object) -> str:
    """One figure line as the suite's summary collects them: ``FIGURE <name>: k=v ...``."""
    text = f"FIGURE {name}: " + " ".join(f"{k}={v}" for k, v in values.items())
    print(text, flush=True)
    return text


def store_env(uri: str, **settings: object) -> dict[str, str]:
    """The environment that points `shipml serve` at the store ``uri`` with ``store.<name>`` settings."""
    return {"SHIPML_STORE__URI": uri} | {f"SHIPML_STORE__{k.upper()}": str(v) for k, v in settings.items()}


def start_fleet(
    root: Path, replicas: int, workers: int, env: dict[str, str], args: list[str] | None = None
) -> list[Server]:
    """``replicas`` servers of ``workers`` workers each (or of ``args``, `shipml serve`'s arguments as given),
    started together, all ready."""
    given = args if args is not None else ["--workers", str(workers)]
    fleet = [spawn_server(root, *given, env=env) for _ in range(replicas)]
    try:
        for server in fleet:
            server.wait_ready(timeout=180)
            every_worker_ready(server)
    except BaseException:
        stop_fleet(fleet)
        raise
    return fleet


def every_worker_ready(server: Server, timeout_s: float = 180.0, in_a_row: int = 20) -> None:
    """Wait until ``in_a_row`` readiness checks in a row, each on a new connection (so each worker gets some),
    answer 200: ``wait_ready`` returns when one worker is ready, and an outage started while another still loads
    its model would make that one answer 503 not_ready."""
    deadline = time.monotonic() + timeout_s
    streak = 0
    while streak < in_a_row:
        assert time.monotonic() < deadline, f"not every worker of {server.url} is ready after {timeout_s:g} s"
        try:
            ok = requests.get(f"{server.url}/health/ready", timeout=10).status_code == 200
        except requests.RequestException:
            ok = False
        streak = streak + 1 if ok else 0
        if not ok:
            time.sleep(0.2)


def stop_fleet(fleet: list[Server]) -> None:
    """SIGTERM every server at once, then wait for each (their writers commit what is queued and flush the
    histograms)."""
    for server in fleet:
        if server.proc.poll() is None:
            server.proc.terminate()
    for server in fleet:
        server.stop()


@dataclass(frozen=True)
class Sent:
    """One request: when it was sent and answered (monotonic seconds), its status (0: no answer), its error code,
    the prediction ids of its answer and how many predictions it asked for."""

    started: float
    ended: float
    status: int
    code: str
    ids: tuple[str, ...]
    asked: int

    @property
    def latency_s(self) -> float:
        return self.ended - self.started


def single(i: int) -> tuple[str, bytes, dict[str, str], int]:
    """Request ``i`` as one keyed record to /predict."""
    body = json.dumps({"features": ROWS[i % len(ROWS)]}).encode()
    return "/predict", body, {"X-Routing-Key": f"user-{i}"}, 1


def batch(i: int, n: int = 100) -> tuple[str, bytes, dict[str, str], int]:
    """Request ``i`` as ``n`` keyed records (an ``id`` each) to /predict/batch."""
    records = [{"features": ROWS[(i * n + k) % len(ROWS)], "id": f"user-{i}-{k}"} for k in range(n)]
    return "/predict/batch", json.dumps({"records": records}).encode(), {"X-Routing-Key": f"batch-{i}"}, n


Make = Callable[[int], tuple[str, bytes, dict[str, str], int]]


@dataclass
class KeyedLoad:
    """``threads`` clients per server of ``fleet``, each with one keep-alive connection (a new one every
    ``reconnect_every`` requests, so a server's workers all get connections), sending ``make(i)`` for i = 0, 1, ...
    until ``max_requests`` (over all clients) or ``stop()``; every answer is kept (``sent``)."""

    fleet: list[Server]
    key: str
    make: Make
    threads: int = 2
    max_requests: int = 10**9
    timeout_s: float = 60.0
    reconnect_every: int = 50
    sent: list[Sent] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _counter: Iterator[int] = field(default_factory=itertools.count)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _clients: list[threading.Thread] = field(default_factory=list)

    def start(self) -> KeyedLoad:
        self._deadline = time.monotonic() + HARD_STOP_S
        for server in self.fleet:
            for k in range(self.threads):
                t = threading.Thread(target=self._client, args=(server,), name=f"keyed-load-{k}", daemon=True)
                t.start()
                self._clients.append(t)
        return self

    def stop(self) -> list[Sent]:
        self._stop.set()
        return self.wait()

    def wait(self) -> list[Sent]:
        for t in self._clients:
            t.join(timeout=self.timeout_s + 10)
        with self._lock:
            return list(self.sent)

    def _client(self, server: Server) -> None:
        host, port = server.url.removeprefix("http://").split(":")
        conn: http.client.HTTPConnection | None = None
        headers = auth(self.key) | {"Content-Type": "application/json"}
        n = 0
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            with self._lock:
                i = next(self._counter)
            if i >= self.max_requests:
                break
            path, body, extra, asked = self.make(i)
            n += 1
            if conn is not None and n % self.reconnect_every == 0:
                conn.close()
                conn = None
            if conn is None:
                conn = http.client.HTTPConnection(host, int(port), timeout=self.timeout_s)
            started = time.monotonic()
            try:
                conn.request("POST", path, body=body, headers=headers | extra)
                resp = conn.getresponse()
                raw = resp.read()
                status = resp.status
                if resp.getheader("connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                raw, status = type(exc).__name__.encode(), 0
                if conn is not None:
                    conn.close()
                conn = None
            ended = time.monotonic()
            with self._lock:
                self.sent.append(_sent(started, ended, status, raw, asked))
        if conn is not None:
            conn.close()


def _sent(started: float, ended: float, status: int, raw: bytes, asked: int) -> Sent:
    if status == 0:
        return Sent(started, ended, 0, raw.decode(), (), asked)
    try:
        body = json.loads(raw)
    except ValueError:
        return Sent(started, ended, status, "not_json", (), asked)
    error = body.get("error") if isinstance(body, dict) else None
    code = str(error.get("code", "")) if isinstance(error, dict) else str(error or "")
    if isinstance(body, dict) and "prediction_id" in body:
        return Sent(started, ended, status, code, (body["prediction_id"],), asked)
    if isinstance(body, dict) and isinstance(body.get("predictions"), list):
        ids = tuple(p["prediction_id"] for p in body["predictions"] if isinstance(p, dict) and "prediction_id" in p)
        return Sent(started, ended, status, code, ids, asked)
    return Sent(started, ended, status, code, (), asked)


def answered_ids(sent: list[Sent]) -> list[str]:
    """The prediction ids of the 200 answers."""
    return [pid for s in sent if s.status == 200 for pid in s.ids]


def statuses(sent: list[Sent]) -> dict[str, int]:
    """How many answers had each status (and error code)."""
    return dict(collections.Counter(f"{s.status}{':' + s.code if s.code else ''}" for s in sent))


def stored_ids(uri: str) -> tuple[list[str], list[float]]:
    """Every stored prediction id of churn (status ok, primary), as rows or in batches, and its time."""
    store = PredictionStore(uri)
    try:
        outcomes = store.predictions.read_outcomes("churn", 0.0, time.time() + 3600)
    finally:
        store.close()
    return [str(i) for i in outcomes.ids], [float(t) for t in outcomes.ts]
