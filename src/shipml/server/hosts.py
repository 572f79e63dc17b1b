"""HostGuard: refuse requests whose Host header names another site (DNS rebinding), and cross-origin
preflights to the admin routes, before anything else runs."""

from __future__ import annotations

import ipaddress

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from shipml.server.errors import ApiError, error_body, protocol_of

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
PROTECTED_PREFIXES = ("/admin/", "/feedback")
SEEN_MAX = 64  # Host values whose verdict HostGuard keeps: a client naming many hosts is parsed each time


def allowed_hosts(bind: str, configured: list[str] | None) -> frozenset[str] | None:
    """The Host names to accept, or None for any: ``configured`` if given, else the loopback names when the
    service listens on a loopback address (a browser page on another site can then not reach it through a
    DNS name that resolves to 127.0.0.1)."""
    if configured is not None:
        return None if "*" in configured else frozenset(h.lower() for h in configured)
    return LOOPBACK_NAMES if is_loopback(bind) else None


def is_loopback(bind: str) -> bool:
    """Whether listening on ``bind`` lets only this machine connect."""
    try:
        return bind == "localhost" or ipaddress.ip_address(bind).is_loopback
    except ValueError:
        return False


def host_name(value: bytes) -> str:
    """The name in a Host header, without its port: ``[::1]:8000`` -> ``::1``, ``a.b:80`` -> ``a.b``."""
    text = value.decode("latin-1").strip().lower()
    if text.startswith("["):
        return text[1 : text.find("]")] if "]" in text else text
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text


class HostGuard:
    """The outermost ASGI layer: 400 for a foreign Host, 403 for a cross-origin preflight to admin routes."""

    def __init__(self, app: ASGIApp, allowed: frozenset[str] | None) -> None:
        self.app = app
        self.allowed = allowed
        self._seen: dict[bytes, bool] = {}  # Host header values met, and whether they are allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = self._refusal(scope)
            if refusal is not None:
                status, code, message = refusal
                body = orjson.dumps(error_body(ApiError(status, code, message), protocol_of(scope["path"])))
                headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

    def _allows(self, host: bytes) -> bool:
        """Whether ``host`` names an allowed site; the verdicts of the few values clients send are kept (the
        parse is 1 to 2 us of every request), up to ``SEEN_MAX`` of them."""
        verdict = self._seen.get(host)
        if verdict is None:
            assert self.allowed is not None  # noqa: S101 - only called with a list of hosts
            verdict = host_name(host) in self.allowed
            if len(self._seen) < SEEN_MAX:
                self._seen[host] = verdict
        return verdict

    def _refusal(self, scope: Scope) -> tuple[int, str, str] | None:
        if self.allowed is not None:
            host = None
            for name, value in scope["headers"]:
                if name == b"host":
                    host = value
                    break
            if host is None or not self._allows(host):
                return (
                    400,
                    "invalid_host",
                    "the Host header names a site this service does not answer for (serve.allowed_hosts)",
                )
        if scope["method"] == "OPTIONS" and scope["path"].startswith(PROTECTED_PREFIXES):
            return 403, "forbidden", "cross-origin requests to admin routes are not allowed"
        return None
