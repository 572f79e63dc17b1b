"""Reliability catalogue, auth (cases 18-25): keys, roles, throttles and hosts against the real server.

Case 23 (JWT attacks) waits until shipml has JWT: no test yet.
"""

from __future__ import annotations

import ast
import hmac
import http.client
import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import requests

from tests.reliability.conftest import (
    GOOD_ROW,
    Project,
    assert_clean,
    bearer,
    error_of,
    host_port,
    http_request,
    raw_exchange,
    still_serving,
)
from tests.support.project import TrainedProject
from tests.support.server import Server, key_line, start_server

pytestmark = pytest.mark.integration

SRC = Path(__file__).parents[2] / "src" / "shipml"

# Every route that needs a key, with a body it would accept.
PROTECTED = [
    ("POST", "/predict", {"features": GOOD_ROW}),
    ("POST", "/predict/batch", {"records": [GOOD_ROW]}),
    ("POST", "/invocations", {"dataframe_records": [GOOD_ROW]}),
    ("GET", "/model", None),
    ("GET", "/v2/models/churn", None),
    ("POST", "/admin/reload", None),
    ("POST", "/feedback", {"prediction_id": "01a2149e-0000-7000-8000-000000000000", "label": "1"}),
]
OPEN = ["/health/live", "/health/ready", "/v2/health/live", "/v2/health/ready", "/metrics"]


def call(server: Server, method: str, path: str, body: Any, headers: dict[str, str]) -> requests.Response:
    return requests.request(method, f"{server.url}{path}", json=body, headers=headers, timeout=10)


def assert_unauthenticated(r: requests.Response, path: str) -> None:
    assert r.status_code == 401, (path, r.status_code, r.text)
    assert r.headers.get("www-authenticate") == "Bearer", r.headers
    assert_clean(r.text)
    if not path.startswith(("/v2", "/invocations")):  # those speak their protocol's error shape
        assert error_of(r)["code"] == "unauthenticated"


# -- 18 ---------------------------------------------------------------------------------------------


def test_case_18_no_key_is_401_with_www_authenticate_and_health_and_metrics_stay_open(
    rel_server: Server, rel_project: Project
) -> None:
    for method, path, body in PROTECTED:
        assert_unauthenticated(call(rel_server, method, path, body, {}), path)
    for path in OPEN:
        r = requests.get(f"{rel_server.url}{path}", timeout=10)
        assert r.status_code == 200, (path, r.text)
    # /metrics is open (README: "open"), so it must leak nothing of the keys
    text = requests.get(f"{rel_server.url}/metrics", timeout=10).text
    for secret in secrets_of(rel_project):
        assert secret not in text
    assert "sk_shipml_" not in text


# -- 19 ---------------------------------------------------------------------------------------------


def test_case_19_malformed_credentials_are_401_or_431_never_500(rel_server: Server, rel_project: Project) -> None:
    key = rel_project.keys.predict
    malformed = [
        {"Authorization": "Bearer sk_shipml_" + "A" * 43},  # well-formed, unknown
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer"},
        {"Authorization": f"Basic {key}"},
        {"Authorization": f"Token {key}"},
        {"Authorization": key},
        {"Authorization": f"Bearer {key[:-1]}"},
        {"Authorization": f"Bearer {key}x"},
        {"X-API-Key": ""},
        {"Authorization": "Bearer " + "k" * 10_240},
        {"X-API-Key": "k" * 10_240},
    ]
    for headers in malformed:
        r = requests.post(f"{rel_server.url}/predict", json={"features": GOOD_ROW}, headers=headers, timeout=10)
        assert r.status_code in (401, 431), (next(iter(headers.values()))[:30], r.status_code, r.text)
        assert_clean(r.text)
        if r.status_code == 401:
            assert r.headers.get("www-authenticate") == "Bearer"
    # non-ASCII bytes in the header, as a client may really send them
    for value in ("Bearer sk_shipml_\u00e9\u00e8".encode(), b"Bearer \xff\xfe\x00x", "Bearer \u4e2d\u6587".encode()):
        request = http_request(rel_server, "POST", "/predict", b"{}", None)
        request = request.replace(b"\r\n\r\n", b"\r\nAuthorization: " + value + b"\r\n\r\n", 1)
        status, _, body = raw_exchange(rel_server, request)
        assert status in (400, 401, 431), (value, status, body)  # 400: a header the HTTP parser refuses
        assert b"Traceback" not in body
    still_serving(rel_server, key)


# -- 20 ---------------------------------------------------------------------------------------------


def test_case_20_a_key_without_the_role_is_403(rel_server: Server, rel_project: Project) -> None:
    predict_only, admin_only = rel_project.keys.predict, rel_project.admin_only
    for method, path, body in PROTECTED:
        if path in ("/admin/reload", "/feedback"):  # shipml's admin routes (feedback needs admin)
            r = call(rel_server, method, path, body, bearer(predict_only))
            assert r.status_code == 403, (path, r.text)
            assert error_of(r)["code"] == "forbidden"
    for method, path, body in PROTECTED:
        if path not in ("/admin/reload", "/feedback"):  # an admin-only key cannot predict or read the model
            r = call(rel_server, method, path, body, bearer(admin_only))
            assert r.status_code == 403, (path, r.status_code, r.text)
    r = requests.post(f"{rel_server.url}/admin/reload", headers=bearer(admin_only), timeout=60)
    assert r.status_code == 200 and r.json()["version"] == "1", r.text


# -- 21 ---------------------------------------------------------------------------------------------


def test_case_21_keys_are_compared_with_compare_digest_over_hashes() -> None:
    from shipml.config import AuthSettings
    from shipml.server import auth

    key, sha = auth.new_key()
    other, other_sha = auth.new_key()
    settings = AuthSettings(keys=[{"name": "a", "sha256": sha}, {"name": "b", "sha256": other_sha}])  # type: ignore[list-item]
    authenticator = auth.Authenticator(settings)
    with mock.patch("hmac.compare_digest", wraps=hmac.compare_digest) as compared:
        assert authenticator.identify(other) == auth.Principal("b", frozenset({"predict"}))
        assert authenticator.identify(key + "x") is None
    assert compared.call_count == 4  # every stored hash, for a match and for a miss alike
    for args, _ in compared.call_args_list:
        assert all(isinstance(a, bytes) and len(a) == 32 for a in args), args  # sha256 digests, never the key
        assert key.encode() not in args and other.encode() not in args


SECRET_NAME = re.compile(r"secret|token|presented|api_key|sha256|digest|password", re.IGNORECASE)


def test_case_21_no_equality_comparison_on_secrets_in_the_server() -> None:
    """The lint rule: no ``==``/``!=`` where an operand is named like a credential, in src/shipml/server."""
    offenders = []
    for file in sorted((SRC / "server").rglob("*.py")):
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            if isinstance(node, ast.Compare) and any(isinstance(op, ast.Eq | ast.NotEq) for op in node.ops):
                names = [ast.unparse(x) for x in (node.left, *node.comparators) if not isinstance(x, ast.Constant)]
                if any(SECRET_NAME.search(n) for n in names):
                    offenders.append(f"{file.relative_to(SRC)}:{node.lineno}: {ast.unparse(node)}")
    assert offenders == []


# -- 22 ---------------------------------------------------------------------------------------------


def secrets_of(project: Project) -> list[str]:
    """16-character pieces of every key's random part (any of them in a log is a leak)."""
    pieces = []
    for key in (project.keys.predict, project.keys.admin, project.admin_only):
        random_part = key.removeprefix("sk_shipml_")
        pieces += [random_part[i : i + 16] for i in range(0, len(random_part) - 15, 8)]
    return pieces


def test_case_22_keys_never_appear_in_logs_store_errors_or_metrics(rel_server: Server, rel_project: Project) -> None:
    keys = rel_project.keys
    wrong = "sk_shipml_" + "Zx9" * 14  # a plausible key the server does not know
    bodies = []
    for headers in (bearer(keys.predict), bearer(keys.admin), bearer(rel_project.admin_only), bearer(wrong),
                    {"X-API-Key": keys.predict}, {"X-API-Key": wrong}):  # fmt: skip
        for path, body in (("/predict", {"features": GOOD_ROW}), ("/predict", {"features": {"tenure": "x"}}),
                           ("/predict/batch", {"records": [GOOD_ROW, {}]}), ("/model", None)):  # fmt: skip
            r = requests.request("GET" if body is None else "POST", f"{rel_server.url}{path}", json=body,
                                 headers=headers, timeout=10)  # fmt: skip
            bodies.append(r.text + str(dict(r.headers)))
        r = requests.post(f"{rel_server.url}/admin/reload", headers=headers, timeout=60)
        bodies.append(r.text + str(dict(r.headers)))
    r = requests.post(f"{rel_server.url}/predict", data=b"{bad", headers=bearer(keys.predict), timeout=10)
    bodies.append(r.text)
    bodies.append(requests.get(f"{rel_server.url}/metrics", timeout=10).text)
    store = b"".join(p.read_bytes() for p in (rel_project.root / ".shipml").glob("predictions.db*"))
    log = rel_server.log.read_bytes()
    pieces = [*secrets_of(rel_project), wrong.removeprefix("sk_shipml_")[:16]]
    for piece in pieces:
        assert all(piece not in text for text in bodies), piece
        assert piece.encode() not in log, piece
        assert piece.encode() not in store, piece
    assert b'"key":"app"' in log  # what does appear: the key's name


# -- 23: JWT: not written, shipml has no JWT yet ------------------------------------------------------


# -- 24 ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def limited(
    rel_project: Project, trained_project: TrainedProject, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, str, str]]:
    """The shared model served with a rate-limited key, an unlimited key and a tight failure throttle."""
    root = rel_project.root
    limited_key, limited_line = key_line("limited", "predict")
    free_key, free_line = key_line("free", "predict")
    config = tmp_path_factory.mktemp("case24") / "shipml.yaml"
    config.write_text(
        trained_project.config()
        + "auth:\n  keys:\n"
        + f"    {limited_line.strip().removesuffix('}')}, rate_limit: {{requests_per_s: 0.05, burst: 3}}}}\n"
        + f"    {free_line.strip()}\n"
        + "  failure_limit: {requests_per_s: 0.05, burst: 5}\n"
        # 127.0.0.2 plays the proxy in front (X-Forwarded-For trusted from it only); idle connections kept 7 s
        + "serve:\n  reload_interval_s: 0\n  trusted_proxies: [127.0.0.2]\n  keep_alive_s: 7\n"
    )
    server = start_server(root, "--config", str(config), env={"SHIPML_STORE__URI": f"sqlite:///{root}/case24.db"})
    yield server, limited_key, free_key
    assert server.stop() == 0


def test_case_24_a_key_over_its_rate_limit_gets_429_with_retry_after_and_others_are_unaffected(
    limited: tuple[Server, str, str],
) -> None:
    server, limited_key, free_key = limited
    answers = [call(server, "POST", "/predict", {"features": GOOD_ROW}, bearer(limited_key)) for _ in range(4)]
    assert [r.status_code for r in answers] == [200, 200, 200, 429], [r.text for r in answers]
    refused = answers[-1]
    assert error_of(refused)["code"] == "rate_limited"
    assert refused.headers["retry-after"].isdigit() and int(refused.headers["retry-after"]) >= 1
    batch = call(server, "POST", "/predict/batch", {"records": [GOOD_ROW]}, bearer(limited_key))
    assert batch.status_code == 429 and "retry-after" in batch.headers
    for _ in range(5):  # the other key, at the same moment
        assert call(server, "POST", "/predict", {"features": GOOD_ROW}, bearer(free_key)).status_code == 200


def test_case_24_repeated_auth_failures_from_one_client_are_throttled(limited: tuple[Server, str, str]) -> None:
    server, _, _ = limited
    statuses = []
    for i in range(7):
        r = call(server, "POST", "/predict", {"features": GOOD_ROW}, bearer(f"sk_shipml_guess{i}"))
        statuses.append(r.status_code)
        last = r
    assert statuses[:5] == [401] * 5 and statuses[5:] == [429, 429], statuses
    assert error_of(last)["code"] == "rate_limited"
    assert int(last.headers["retry-after"]) >= 1


def _failed_auth_from(server: Server, peer: str, forwarded_for: str | None) -> int:
    """One request with a wrong key, sent from the loopback address ``peer``: its status."""
    host, port = host_port(server)
    conn = http.client.HTTPConnection(host, port, timeout=10, source_address=(peer, 0))
    headers = {"Authorization": "Bearer sk_shipml_wrong", "Content-Type": "application/json"}
    if forwarded_for is not None:
        headers["X-Forwarded-For"] = forwarded_for
    try:
        conn.request("POST", "/predict", body=json.dumps({"features": GOOD_ROW}), headers=headers)
        return conn.getresponse().status
    finally:
        conn.close()


def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_failed_auth_bucket(
    limited: tuple[Server, str, str],
) -> None:
    server, _, _ = limited
    # the proxy (127.0.0.2) appends the client's address to what the client sent: the last one is the client
    first = [_failed_auth_from(server, "127.0.0.2", "203.0.113.9, 198.51.100.1") for _ in range(6)]
    assert first == [401] * 5 + [429], first
    assert _failed_auth_from(server, "127.0.0.2", "198.51.100.2") == 401  # another client: its own bucket
    # a forged first address does not escape the bucket of the address the proxy saw
    assert _failed_auth_from(server, "127.0.0.2", "192.0.2.77, 198.51.100.1") == 429


def test_x_forwarded_for_from_an_untrusted_peer_is_ignored(limited: tuple[Server, str, str]) -> None:
    server, _, _ = limited
    # 127.0.0.3 is not a trusted proxy: a new X-Forwarded-For each time does not buy a new bucket
    statuses = [_failed_auth_from(server, "127.0.0.3", f"198.51.100.{10 + i}") for i in range(6)]
    assert statuses == [401] * 5 + [429], statuses


def _one_response(sock: socket.socket) -> bytes:
    """One whole HTTP response (headers and its Content-Length body) read from ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        body += sock.recv(65536)
    return data


def test_an_idle_connection_is_kept_for_serve_keep_alive_s_then_closed(limited: tuple[Server, str, str]) -> None:
    server, _, free_key = limited
    host, port = host_port(server)
    request = (f"GET /health/live HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {free_key}\r\n\r\n").encode()
    with socket.create_connection((host, port), timeout=15) as sock:
        sock.sendall(request)
        assert _one_response(sock).startswith(b"HTTP/1.1 200")
        time.sleep(6)  # past uvicorn's default of 5 s, within serve.keep_alive_s (7)
        sock.sendall(request)
        assert _one_response(sock).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        assert sock.recv(65536) == b""  # then shipml closes it, once idle for keep_alive_s
        closed_after = time.monotonic() - started
    print(f"FIGURE serve.keep_alive_s=7: idle connection closed after {closed_after:.1f} s")
    assert closed_after > 6


# -- 25 ---------------------------------------------------------------------------------------------


def test_case_25_foreign_host_and_cross_origin_preflights_to_admin_routes_are_refused(
    rel_server: Server, rel_project: Project
) -> None:
    _, port = host_port(rel_server)
    admin = rel_project.keys.admin
    for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.nip.io", "localhost.evil.example", "[::2]"):
        for method, path, key in (("POST", "/admin/reload", admin), ("POST", "/predict", rel_project.keys.predict),
                                  ("GET", "/health/ready", None)):  # fmt: skip
            request = http_request(rel_server, method, path, b'{"features": {}}', key)
            request = re.sub(rb"Host: [^\r]*", b"Host: " + host.encode(), request, count=1)
            status, _, body = raw_exchange(rel_server, request)
            assert status == 400, (host, path, status, body)
            assert b'"invalid_host"' in body
    for host in ("localhost", f"localhost:{port}", f"127.0.0.1:{port}"):
        request = re.sub(
            rb"Host: [^\r]*", b"Host: " + host.encode(), http_request(rel_server, "GET", "/health/live", b"", None)
        )
        assert raw_exchange(rel_server, request)[0] == 200, host
    preflight = {"Origin": "http://evil.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization, content-type"}  # fmt: skip
    for path in ("/admin/reload", "/feedback"):
        r = requests.options(f"{rel_server.url}{path}", headers=preflight, timeout=10)
        assert r.status_code == 403, (path, r.status_code, r.text)
        assert "access-control-allow-origin" not in r.headers
    still_serving(rel_server, rel_project.keys.predict)
