"""Slow clients are cut: a request whose headers and body have not all arrived within
``serve.read_timeout_s`` is answered 408 and its connection closed.

uvicorn has a keep-alive timeout only, so a client trickling its headers or its body a byte at a time
(slowloris) would hold a connection, and a slot of ``serve.max_in_flight``, for as long as it likes. This
is uvicorn's own HTTP protocol with one deadline per request: set when the request begins (the connection
is made, or its first byte arrives on a kept-alive connection) and cleared when its last byte is parsed.
A request costs two attribute writes and one clock read; a single timer per connection, re-armed at most
once per timeout, checks the deadline, so a busy connection does not arm and cancel a timer per request.

Time the server itself holds a request back (reading paused while the app works through a large body or
an earlier pipelined request, or a client told to wait for ``100 Continue``) is not counted against it.
A request that never sent a byte is closed silently (a browser's pre-opened connection); one that sent
part of itself gets ``408 request_timeout`` in shipml's error shape with ``Connection: close``, and an app
still reading its body sees ``http.disconnect``.

The classes read uvicorn's per-connection state (its request cycle, parser callbacks and flow control),
which are not a public API: they are written against uvicorn 0.54 and tested against the installed one.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
from typing import Any, Protocol, cast

import h11
import structlog
from uvicorn._types import HTTPScope
from uvicorn.config import Config
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from shipml.server.errors import ApiError, render

log = structlog.get_logger("shipml.server")

_STATUS_LINE = b"HTTP/1.1 408 Request Timeout\r\n"


class _Cycle(Protocol):
    """What both of uvicorn's request cycles (httptools and h11) have, and what a cut needs of them."""

    scope: HTTPScope
    message_event: asyncio.Event
    disconnected: bool
    keep_alive: bool
    waiting_for_100_continue: bool
    response_started: bool
    response_complete: bool


class _ResumingFlow(FlowControl):
    """uvicorn's flow control, telling the protocol when reading resumes after a pause (the app takes the body)."""

    def __init__(self, transport: asyncio.Transport, on_resume: Any) -> None:
        super().__init__(transport)
        self._on_resume = on_resume

    def resume_reading(self) -> None:
        if self.read_paused:
            super().resume_reading()
            self._on_resume()


class _ReadDeadline(asyncio.Protocol):
    """The deadline, its timer and the cut, shared by the httptools and h11 protocols below."""

    # set by uvicorn's protocol, which comes after this class in the MRO
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    flow: FlowControl
    server_state: ServerState
    client: tuple[str, int] | None

    _read_timeout_s: float
    _read_deadline: float | None  # loop time by which the request being read must be complete; None: not reading
    _read_timer: asyncio.TimerHandle | None

    def _init_read_deadline(self, read_timeout_s: float) -> None:
        self._read_timeout_s = read_timeout_s
        self._read_deadline = None
        self._read_timer = None

    def _request_being_read(self) -> tuple[bool, _Cycle | None, _Cycle | None]:
        """Whether any byte of the request being read has arrived, its cycle once its headers are
        complete (else None), and the connection's latest cycle (an earlier request's, or the same)."""
        raise NotImplementedError

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.flow = _ResumingFlow(self.transport, self._reading_resumed)  # before any request cycle takes it
        self._start_reading()

    def _reading_resumed(self) -> None:
        """Reading was paused (the server held the request back) and resumes: the client has a whole timeout
        from now, not only what was left when the connection's timer last noticed the pause."""
        if self._read_deadline is not None:
            self._read_deadline = max(self._read_deadline, self.loop.time() + self._read_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_read_timer()
        super().connection_lost(exc)

    def _start_reading(self) -> None:
        """A request begins: its deadline, and the connection's timer if none is pending."""
        self._read_deadline = self.loop.time() + self._read_timeout_s
        if self._read_timer is None:
            self._read_timer = self.loop.call_later(self._read_timeout_s, self._read_timer_fired)

    def _stop_read_timer(self) -> None:
        self._read_deadline = None
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _read_timer_fired(self) -> None:
        self._read_timer = None
        deadline = self._read_deadline
        if deadline is None or self.transport.is_closing():
            return  # between requests: the next one arms the timer again
        now = self.loop.time()
        if now < deadline:  # a later request than the one the timer was armed for
            self._read_timer = self.loop.call_at(deadline, self._read_timer_fired)
            return
        begun, current, latest = self._request_being_read()
        held_back = (
            self.flow.read_paused
            or (current is not None and current.waiting_for_100_continue)
            or (current is None and latest is not None and not latest.response_complete)
        )
        if held_back:  # this side is not reading: the client is not the slow one
            self._start_reading()
            return
        self._cut(begun, current)

    def _cut(self, begun: bool, current: _Cycle | None) -> None:
        self._read_deadline = None
        path = current.scope["path"] if current is not None else ""
        log.info(
            "request_read_timeout",
            client=self.client[0] if self.client else None,
            phase="nothing sent" if not begun else "headers" if current is None else "body",
            path=path or None,
            read_timeout_s=self._read_timeout_s,
        )
        if current is not None and current.response_started:
            # answered before its body was read (e.g. 413 on its declared size); the rest never came
            self.transport.close()
            return
        if begun:
            self.transport.write(self._timeout_answer(path))
        if current is not None:  # the app, if still reading the body, sees http.disconnect; its answer is dropped
            current.disconnected = True
            current.keep_alive = False
            current.message_event.set()
        self.transport.close()

    def _timeout_answer(self, path: str) -> bytes:
        message = (
            f"the request did not arrive in full within {self._read_timeout_s:g} s (serve.read_timeout_s); "
            "send its headers and body without pausing"
        )
        _, body, headers = render(ApiError(408, "request_timeout", message), path)
        lines = [_STATUS_LINE]
        for name, value in self.server_state.default_headers:  # Date (and Server when turned on), as uvicorn's
            lines += [name, b": ", value, b"\r\n"]
        for key, text in headers.items():
            lines += [key.encode("latin-1"), b": ", text.encode("latin-1"), b"\r\n"]
        lines += [b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body)]
        return b"".join([*lines, body])


class HttpToolsProtocolWithReadTimeout(_ReadDeadline, HttpToolsProtocol):
    """uvicorn's httptools protocol, with a deadline per request (the parser's message begin/complete)."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        read_timeout_s: float,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._init_read_deadline(read_timeout_s)

    def on_message_begin(self) -> None:
        HttpToolsProtocol.on_message_begin(self)
        if self._read_deadline is None:  # else: the connection's first request, timed from connection_made
            self._start_reading()

    def on_message_complete(self) -> None:
        self._read_deadline = None
        HttpToolsProtocol.on_message_complete(self)

    def handle_websocket_upgrade(self) -> None:
        self._stop_read_timer()  # the connection belongs to the websocket protocol from here
        HttpToolsProtocol.handle_websocket_upgrade(self)

    def _request_being_read(self) -> tuple[bool, _Cycle | None, _Cycle | None]:
        cycle = self.cycle
        # on_message_begin makes a new scope and on_headers_complete a cycle holding it
        current = cycle if cycle is not None and cycle.scope is self.scope else None
        return self.scope is not None, current, cycle


class H11ProtocolWithReadTimeout(_ReadDeadline, H11Protocol):
    """uvicorn's h11 protocol, with a deadline per request (h11's state for the client after each read)."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        read_timeout_s: float,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._init_read_deadline(read_timeout_s)

    def data_received(self, data: bytes) -> None:
        H11Protocol.data_received(self, data)
        state = self.conn.their_state
        if state is h11.IDLE or state is h11.SEND_BODY:  # headers or body still to come
            if self._read_deadline is None:
                self._start_reading()
        else:
            self._read_deadline = None

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        self._stop_read_timer()
        H11Protocol.handle_websocket_upgrade(self, event)

    def _request_being_read(self) -> tuple[bool, _Cycle | None, _Cycle | None]:
        cycle = self.cycle
        state = self.conn.their_state
        current = cycle if state is h11.SEND_BODY else None
        begun = current is not None or state is not h11.IDLE or bool(self.conn.trailing_data[0])
        return begun, current, cycle


def http_protocol(read_timeout_s: float) -> type[asyncio.Protocol]:
    """The protocol for ``uvicorn.run(http=...)``: httptools when installed (as uvicorn's "auto"), else h11.

    A ``functools.partial`` of the class, not a class: uvicorn only calls it, and a partial pickles by
    reference with its timeout, so ``--workers`` (uvicorn's spawned processes) get the same value.
    """
    if not read_timeout_s > 0:
        raise ValueError(f"serve.read_timeout_s: must be > 0, got {read_timeout_s}")
    if importlib.util.find_spec("httptools") is None:  # pragma: no cover - uvicorn[standard] installs it
        return cast(
            "type[asyncio.Protocol]", functools.partial(H11ProtocolWithReadTimeout, read_timeout_s=read_timeout_s)
        )
    return cast(
        "type[asyncio.Protocol]", functools.partial(HttpToolsProtocolWithReadTimeout, read_timeout_s=read_timeout_s)
    )
