"""Fixtures of the reliability catalogue's cases 1-32: one trained model and one running `shipml serve`
(auth on) shared by the bad-input and auth cases, and the raw-HTTP helpers those cases need.

The fixture names carry a ``rel_`` prefix so they never shadow the ``project``/``server`` fixtures the
other reliability modules define for themselves.
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from shipml.adapters.store import PredictionStore
from shipml.core.prediction import Prediction
from tests.support.project import TrainedProject
from tests.support.server import Keys, Server, key_line, make_keys, start_server

# Small limits so that "limit + 1" cases are cheap to send.
MAX_BODY_BYTES = 1_048_576
MAX_BATCH = 100

# A record the example model accepts: every feature, each value inside its trained range/categories.
GOOD_ROW: dict[str, Any] = {
    "tenure": 12,
    "monthly_charges": 70.5,
    "total_charges": 800.0,
    "age": 40,
    "support_calls": 1,
    "data_gb": 10.0,
    "contract": "one-year",
    "payment": "mailed-check",
    "internet": "dsl",
    "gender": "male",
}


@dataclass(frozen=True)
class Project:
    """A project directory with churn/1 in production (the session's trained project, read through this
    directory's shipml.yaml; its own prediction store), and its keys."""

    root: Path
    data: Path  # the training data of churn/1
    keys: Keys
    admin_only: str  # a key with the admin role and without predict
    auth_yaml: str


@pytest.fixture(scope="session")
def rel_project(tmp_path_factory: pytest.TempPathFactory, trained_project: TrainedProject) -> Project:
    keys, auth = make_keys()
    admin_only, line = key_line("ops-only", "admin")
    # Failed authentications are throttled per client address; every test here speaks from 127.0.0.1,
    # so the shared server allows many (case 24 checks the throttle on a server of its own).
    auth += f"{line}  failure_limit: {{requests_per_s: 100, burst: 1000}}\n"
    serve = (
        "serve:\n  reload_interval_s: 0\n  grace_period_s: 5\n"
        f"  max_batch: {MAX_BATCH}\n  max_body_bytes: {MAX_BODY_BYTES}\n"
    )
    root = trained_project.workspace(tmp_path_factory.mktemp("reliability-1-32"), auth + serve)
    return Project(root, trained_project.data, keys, admin_only, auth)


@pytest.fixture(scope="session")
def rel_server(rel_project: Project) -> Iterator[Server]:
    """`shipml serve` on the default policies (unknown categories and out-of-range values rejected)."""
    server = start_server(rel_project.root)
    yield server
    assert server.stop() == 0


@pytest.fixture(scope="session")
def rel_lenient(rel_project: Project) -> Iterator[Server]:
    """The same model served with ``unknown_categories: accept`` and ``out_of_range: accept``, logging
    to a store of its own."""
    env = {
        "SHIPML_SERVE__UNKNOWN_CATEGORIES": "accept",
        "SHIPML_SERVE__OUT_OF_RANGE": "accept",
        "SHIPML_STORE__URI": f"sqlite:///{rel_project.root}/lenient.db",
    }
    server = start_server(rel_project.root, env=env)
    yield server
    assert server.stop() == 0


# -- HTTP helpers -----------------------------------------------------------------------------------------


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def post_raw(server: Server, path: str, body: bytes, key: str | None, content_type: str | None = "application/json",
             headers: dict[str, str] | None = None) -> requests.Response:  # fmt: skip
    """POST exactly ``body`` (no re-encoding by the client)."""
    sent = dict(headers or {})
    if content_type is not None:
        sent["Content-Type"] = content_type
    if key is not None:
        sent |= bearer(key)
    return requests.post(f"{server.url}{path}", data=body, headers=sent, timeout=30)


def error_of(response: requests.Response) -> dict[str, Any]:
    """The ``error`` object of a shipml error body, after checking the body's shape and hygiene."""
    assert response.headers["content-type"].startswith("application/json"), response.headers
    assert_clean(response.text)
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error["code"], str) and isinstance(error["message"], str), error
    for detail in error.get("details", []):
        assert set(detail) == {"record", "feature", "rule", "message"}, detail
    return error  # type: ignore[no-any-return]


def assert_clean(text: str) -> None:
    """No stack trace, no exception repr, no file paths in what a client sees."""
    for leak in ("Traceback", 'File "', '.py"', "site-packages", "RecursionError", "orjson.", "Exception("):
        assert leak not in text, f"{leak!r} in {text[:500]}"


def still_serving(server: Server, key: str) -> None:
    """A good request still gets its prediction (the process survived and is not wedged)."""
    r = requests.post(f"{server.url}/predict", json={"features": GOOD_ROW}, headers=bearer(key), timeout=10)
    assert r.status_code == 200, r.text
    assert server.proc.poll() is None


def host_port(server: Server) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def raw_exchange(server: Server, request: bytes, *, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes on a fresh connection; the response's status, headers and body."""
    with socket.create_connection(host_port(server), timeout=timeout) as sock:
        # the server may answer and close before it has read everything
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request)
        return read_response(sock)


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response (Content-Length framed) from ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before a full response head: {data[:300]!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return status, headers, rest[:length]


def http_request(server: Server, method: str, path: str, body: bytes, key: str | None,
                 extra: list[tuple[str, str]] | None = None) -> bytes:  # fmt: skip
    """A raw HTTP/1.1 request with a Content-Length body."""
    host, port = host_port(server)
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json",
             f"Content-Length: {len(body)}", "Connection: close"]  # fmt: skip
    if key is not None:
        lines.append(f"Authorization: Bearer {key}")
    lines += [f"{k}: {v}" for k, v in extra or []]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def metric(server: Server, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels`` (0 when there is none)."""
    total = 0.0
    for line in requests.get(f"{server.url}/metrics", timeout=10).text.splitlines():
        if line.startswith("#"):
            continue
        sample, _, value = line.rpartition(" ")
        if sample.split("{", 1)[0] != name:
            continue
        if all(f'{k}="{v}"' in sample for k, v in labels.items()):
            total += float(value)
    return total


def vm_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def stored(root: Path, prediction_id: str, uri: str | None = None) -> Prediction | None:
    """The prediction ``prediction_id`` as the store logged it, read through the store's own API."""
    store = PredictionStore(uri or f"sqlite:///{root}/.shipml/predictions.db")
    try:
        return store.predictions.get(prediction_id)
    finally:
        store.close()


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()
