"""A foreign Host header (DNS rebinding) and cross-origin preflights to admin routes are refused first."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from shipml.server.hosts import SEEN_MAX, HostGuard, allowed_hosts, host_name


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        (b"127.0.0.1:8000", "127.0.0.1"),
        (b"[::1]:8000", "::1"),
        (b"LocalHost", "localhost"),
        (b"a.example:80", "a.example"),
    ],
)
def test_the_name_of_a_host_header(raw: bytes, name: str) -> None:
    assert host_name(raw) == name


def test_loopback_binds_accept_loopback_names_only_unless_configured() -> None:
    assert allowed_hosts("127.0.0.1", None) == {"localhost", "127.0.0.1", "::1"}
    assert allowed_hosts("::1", None) == {"localhost", "127.0.0.1", "::1"}
    assert allowed_hosts("0.0.0.0", None) is None  # noqa: S104 - a bind address, not a bind
    assert allowed_hosts("127.0.0.1", ["api.example", "*"]) is None
    assert allowed_hosts("127.0.0.1", ["API.example"]) == {"api.example"}


def call(guard: HostGuard, method: str, path: str, host: bytes | None) -> tuple[int, Any]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    headers = [(b"host", host)] if host is not None else []
    scope = {"type": "http", "method": method, "path": path, "headers": headers}
    asyncio.run(guard(scope, receive, send))
    return sent[0]["status"], orjson.loads(sent[1]["body"]) if sent[1]["body"] else None


async def ok_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def test_the_guard_refuses_foreign_hosts_and_admin_preflights() -> None:
    guard = HostGuard(ok_app, allowed_hosts("127.0.0.1", None))
    assert call(guard, "POST", "/predict", b"127.0.0.1:8000")[0] == 200
    assert call(guard, "POST", "/predict", b"localhost:8000")[0] == 200
    status, body = call(guard, "POST", "/predict", b"evil.example:8000")
    assert status == 400 and body["error"]["code"] == "invalid_host"
    assert call(guard, "POST", "/predict", None)[0] == 400
    status, body = call(guard, "OPTIONS", "/admin/reload", b"127.0.0.1:8000")
    assert status == 403 and body["error"]["code"] == "forbidden"
    assert call(guard, "OPTIONS", "/feedback", b"127.0.0.1")[0] == 403


def test_a_foreign_host_is_refused_in_the_shape_of_the_protocol_the_path_speaks() -> None:
    guard = HostGuard(ok_app, allowed_hosts("127.0.0.1", None))
    message = "the Host header names a site this service does not answer for (serve.allowed_hosts)"
    assert call(guard, "POST", "/v2/models/churn/infer", b"evil.example") == (400, {"error": message})
    status, body = call(guard, "POST", "/invocations", b"evil.example")
    assert status == 400
    assert body == {
        "error": {"code": "invalid_host", "message": message},
        "error_code": "BAD_REQUEST",
        "message": message,
    }


def test_verdicts_kept_for_the_hosts_met_answer_the_same_and_stay_bounded() -> None:
    guard = HostGuard(ok_app, allowed_hosts("127.0.0.1", None))
    for _ in range(3):  # the second and third time from the kept verdicts
        assert call(guard, "POST", "/predict", b"localhost:8000")[0] == 200
        assert call(guard, "POST", "/predict", b"evil.example:8000")[0] == 400
    for i in range(SEEN_MAX * 2):  # a client naming many hosts: each judged, only SEEN_MAX verdicts kept
        assert call(guard, "POST", "/predict", f"h{i}.example".encode())[0] == 400
    assert call(guard, "POST", "/predict", b"127.0.0.1:9")[0] == 200
    assert len(guard._seen) == SEEN_MAX
