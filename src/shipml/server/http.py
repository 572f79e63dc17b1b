"""Request plumbing shared by the routes: bounded body reading, JSON parsing, auth checks."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from shipml.config import Role
from shipml.server.auth import Authenticator, Principal, allows, key_from_headers
from shipml.server.errors import ApiError
from shipml.server.ratelimit import retry_after


async def read_json(request: Request) -> Any:
    """The parsed body; 413 past the configured size, 400 for bad JSON (including nesting past orjson's limit)."""
    return parse_json(await read_body(request))


async def read_body(request: Request) -> bytes:
    """The raw body, bounded by serve.max_body_bytes (413 from the declared size, before reading, or as
    soon as a chunked body passes it); 415 for a compressed body."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding != "identity":
        raise ApiError(
            415, "unsupported_media_type", f"Content-Encoding {encoding[:32]!r} is not supported; send the body as is"
        )
    limit: int = request.app.state.shipml.settings.serve.max_body_bytes
    check_declared_size(request.headers.get("content-length"), limit)
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "body_too_large", f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def check_declared_size(declared: str | None, limit: int) -> None:
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "body_too_large", f"request body is {declared} bytes; the limit is {limit}")


def parse_json(body: bytes) -> Any:
    """The parsed body; 400 for an empty or invalid one."""
    if not body:
        raise ApiError(400, "invalid_json", "request body is empty; expected JSON")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"request body is not valid JSON: {str(exc).split(':')[0]}") from None


def authorize(request: Request, role: Role) -> Principal:
    """The caller's principal if it has ``role``: 401 without a valid key, 403 without the role."""
    presented = key_from_headers(request.headers.get("authorization"), request.headers.get("x-api-key"))
    client = request.client.host if request.client else None
    principal = authorize_key(request.app.state.shipml.auth, presented, role, client)
    request.scope.setdefault("state", {})["principal"] = principal.name
    return principal


def authorize_key(auth: Authenticator, presented: str | None, role: Role, client: str | None) -> Principal:
    """The principal of ``presented`` if it has ``role``: 401 without a valid key (429 once ``client`` failed
    too often), 403 without the role, 429 with Retry-After past the key's rate limit."""
    principal = auth.identify(presented)
    if principal is None:
        wait = auth.failed(client)
        if wait:
            raise ApiError(
                429,
                "rate_limited",
                "too many failed authentications; retry later",
                headers={"Retry-After": retry_after(wait)},
            )
        raise ApiError(401, "unauthenticated", "a valid API key is required (Authorization: Bearer <key> or X-API-Key)")
    if not allows(principal, role):
        raise ApiError(403, "forbidden", f"this key lacks the {role!r} role")
    wait = auth.over_limit(principal)
    if wait:
        raise ApiError(
            429,
            "rate_limited",
            f"key {principal.name!r} is over its rate limit",
            headers={"Retry-After": retry_after(wait)},
        )
    return principal
