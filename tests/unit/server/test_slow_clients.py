"""Slow clients are cut at serve.read_timeout_s: a real uvicorn server in this process, on an ephemeral port,
with each of uvicorn's HTTP protocols (httptools, h11) and a small ASGI app that reads its body."""

from __future__ import annotations

import asyncio
import functools
import http.client
import json
import pickle
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn

from shipml.server.slow_clients import H11ProtocolWithReadTimeout, HttpToolsProtocolWithReadTimeout, http_protocol

READ_TIMEOUT_S = 0.6
KEEP_ALIVE_S = 1.5  # longer than the read timeout: an idle connection must follow this one, not ours
GIVE_UP_S = 10.0  # a cut that has not happened by then never will


@dataclass
class App:
    """Answers with the size of the body it read; ``/slow-reader`` and ``/late-reader`` wait before reading
    (two read timeouts, one and a half), ``/early`` answers 413 without reading. Remembers each request's last ``receive`` message type."""

    last_message: list[str] = field(default_factory=list)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["path"] == "/early":
            await _answer(send, 413, {"error": "too large"})
            return
        if scope["path"] == "/slow-reader":
            await asyncio.sleep(READ_TIMEOUT_S * 2)
        if scope["path"] == "/late-reader":
            await asyncio.sleep(READ_TIMEOUT_S * 1.5)
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self.last_message.append("http.disconnect")
                return
            size += len(message.get("body", b""))
            if not message.get("more_body", False):
                break
        self.last_message.append("http.request")
        await _answer(send, 200, {"bytes": size})


async def _answer(send: Any, status: int, content: dict[str, Any]) -> None:
    body = json.dumps(content).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@dataclass
class Running:
    port: int
    app: App


@pytest.fixture(scope="module", params=["httptools", "h11"])
def server(request: pytest.FixtureRequest) -> Iterator[Running]:
    protocol = (
        http_protocol(READ_TIMEOUT_S)  # what `shipml serve` passes to uvicorn.run
        if request.param == "httptools"
        else functools.partial(H11ProtocolWithReadTimeout, read_timeout_s=READ_TIMEOUT_S)
    )
    app = App()
    config = uvicorn.Config(
        app,
        http=protocol,  # type: ignore[arg-type] - a partial, as `shipml serve` passes
        lifespan="off",
        log_level="warning",
        timeout_keep_alive=KEEP_ALIVE_S,  # type: ignore[arg-type] - a float works (loop.call_later)
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + GIVE_UP_S
    while not srv.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    yield Running(sock.getsockname()[1], app)
    srv.should_exit = True
    thread.join(GIVE_UP_S)
    sock.close()


def _headers(path: str, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def _trickle(port: int, first: bytes, rest: bytes, every: float = 0.1) -> bytes:
    """Send ``first``, then ``rest`` a byte every ``every`` s until the server answers or closes; then read
    until it closes. Everything the server sent (b"" for a silent close)."""
    with socket.create_connection(("127.0.0.1", port), timeout=GIVE_UP_S) as s:
        s.sendall(first)
        started = time.monotonic()
        for byte in rest:
            assert time.monotonic() - started < GIVE_UP_S, "the slow client was never cut"
            try:
                s.sendall(bytes([byte]))
                s.settimeout(every)
                answer = s.recv(65536)
            except TimeoutError:
                continue
            except OSError:  # reset: the server closed the connection
                return b""
            return answer + _read_to_close(s)
        raise AssertionError("the whole request was sent and the server neither answered nor closed")


def _read_to_close(s: socket.socket) -> bytes:
    s.settimeout(GIVE_UP_S)
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def _assert_408(answer: bytes) -> None:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode().lower().split("\r\n")
    assert lines[0] == "http/1.1 408 request timeout"
    assert "connection: close" in lines
    assert "content-type: application/json" in lines
    error = json.loads(body)["error"]
    assert error["code"] == "request_timeout"
    assert "serve.read_timeout_s" in error["message"]
    assert answer.count(b"HTTP/1.1") == 1


def _wait_for(check: Any, what: str) -> None:
    deadline = time.monotonic() + GIVE_UP_S
    while not check():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.02)


def test_trickled_headers_get_408_and_the_connection_is_closed(server: Running) -> None:
    request = _headers("/predict", 2) + b"{}"
    _assert_408(_trickle(server.port, request[:20], request[20:]))


def test_trickled_body_gets_408_and_the_app_sees_a_disconnect(server: Running) -> None:
    seen = len(server.app.last_message)
    _assert_408(_trickle(server.port, _headers("/predict", 100), b"x" * 100))
    _wait_for(lambda: len(server.app.last_message) > seen, "the app's receive returned")
    assert server.app.last_message[seen] == "http.disconnect"


def test_a_connection_that_sends_nothing_is_closed_without_an_answer(server: Running) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=GIVE_UP_S) as s:
        assert _read_to_close(s) == b""


def test_a_request_answered_before_its_body_arrived_is_not_answered_twice(server: Running) -> None:
    answer = _trickle(server.port, _headers("/early", 100), b"x" * 100)
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert answer.count(b"HTTP/1.1") == 1


def test_normal_and_keep_alive_requests_are_unaffected(server: Running) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=GIVE_UP_S)
    try:
        for i in range(4):  # together longer than the read timeout, on one connection
            conn.request("POST", "/predict", body=b"x" * (i * 1000), headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            assert (response.status, json.loads(response.read())) == (200, {"bytes": i * 1000})
            time.sleep(READ_TIMEOUT_S / 2)
        # a body in two parts, the second well within the timeout
        conn.putrequest("POST", "/predict")
        conn.putheader("Content-Length", "10")
        conn.endheaders(b"12345")
        time.sleep(READ_TIMEOUT_S / 4)
        conn.send(b"67890")
        response = conn.getresponse()
        assert (response.status, json.loads(response.read())) == (200, {"bytes": 10})
    finally:
        conn.close()


def test_an_app_slow_to_read_a_large_body_does_not_get_its_client_cut(server: Running) -> None:
    """Reading is paused while the app has not taken the body: the server is the slow one, not the client."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=GIVE_UP_S)
    try:
        # 500 kB: well past uvicorn's 64 kB high-water mark (reading pauses), and small enough that the rest
        # arrives well within the timeout once the app reads, even on a busy machine
        conn.request("POST", "/slow-reader", body=b"x" * 500_000)
        response = conn.getresponse()
        assert (response.status, json.loads(response.read())) == (200, {"bytes": 500_000})
    finally:
        conn.close()


def test_the_client_has_a_whole_timeout_from_when_the_app_reads_again(server: Running) -> None:
    """The time reading was paused is the server's: once the app reads, the client has serve.read_timeout_s for
    the rest of its body. Here the app reads after 0.9 s and the client sends its last bytes 0.45 s later. A clock
    restarted only when the connection's timer noticed the pause (0.6 s) would have cut it at 1.2 s."""
    body = b"x" * 500_000  # reading pauses past uvicorn's 64 kB high-water mark
    with socket.create_connection(("127.0.0.1", server.port), timeout=GIVE_UP_S) as s:
        started = time.monotonic()
        s.sendall(_headers("/late-reader", len(body) + 10) + body)
        time.sleep(max(0.0, READ_TIMEOUT_S * 2.25 - (time.monotonic() - started)))
        s.sendall(b"y" * 10)
        answer = s.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(json.dumps({"bytes": len(body) + 10}).encode())


def test_an_idle_keep_alive_connection_follows_the_keep_alive_timeout(server: Running) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=GIVE_UP_S) as s:
        for _ in range(2):
            s.sendall(_headers("/predict", 2) + b"{}")
            assert s.recv(65536).startswith(b"HTTP/1.1 200 ")
            time.sleep((READ_TIMEOUT_S + KEEP_ALIVE_S) / 2)  # idle past the read timeout: still open
        # then closed by uvicorn's keep-alive timeout, silently
        assert _read_to_close(s) == b""


def test_the_protocol_keeps_its_timeout_through_a_worker_process_pickle() -> None:
    """`--workers` hands uvicorn's Config to spawned processes by pickle."""
    config = uvicorn.Config("shipml.server.app:app_from_environment", http=http_protocol(3.5))
    copied = pickle.loads(pickle.dumps(config))  # noqa: S301 - our own object
    assert copied.http.func is HttpToolsProtocolWithReadTimeout
    assert copied.http.keywords == {"read_timeout_s": 3.5}


def test_a_timeout_that_is_not_positive_is_refused() -> None:
    with pytest.raises(ValueError, match=r"serve.read_timeout_s: must be > 0, got 0"):
        http_protocol(0)
