"""Request plumbing shared by the routes: bounded body reading, JSON parsing, auth checks."""

from __future__ import annotations

import json
from typing import Any

import orjson
from starlette.requests import Request
from starlette.types import Receive

from shipml.config import KeyRole
from shipml.server.auth import Authenticator, Principal, allows, key_from_headers
from shipml.server.errors import ApiError
from shipml.server.ratelimit import retry_after


async def read_json(request: Request) -> Any:
    """The parsed body; 415 unless it is declared JSON, 413 past the configured size, 400 for bad JSON."""
    check_json_type(request.headers.get("content-type"))
    return parse_json(await read_body(request))


def check_json_type(content_type: str | None) -> None:
    """415 unless ``content_type`` is JSON (``application/json`` or a ``+json`` type, any parameters)."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        shown = repr(media[:64]) if media else "none"
        raise ApiError(415, "unsupported_media_type", f"expected Content-Type: application/json, got {shown}")


async def read_body(request: Request) -> bytes:
    """The raw body of a framework request (see ``receive_body``)."""
    headers = request.headers
    limit: int = request.app.state.shipml.settings.serve.max_body_bytes
    return await receive_body(request.receive, headers.get("content-encoding"), headers.get("content-length"), limit)


async def receive_body(receive: Receive, content_encoding: str | None, content_length: str | None, limit: int) -> bytes:
    """The raw body from the ASGI ``receive`` channel, the one reader of every route (the fast lane's too):
    415 for a compressed body, 413 past ``limit`` bytes (from the declared size before reading, or as soon as
    a chunked body passes it), 400 when the client goes away before the body is whole."""
    encoding = (content_encoding or "identity").strip().lower()
    if encoding != "identity":
        raise ApiError(
            415, "unsupported_media_type", f"Content-Encoding {encoding[:32]!r} is not supported; send the body as is"
        )
    check_declared_size(content_length, limit)
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ApiError(400, "client_disconnected", "the client went away")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "body_too_large", f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def check_declared_size(declared: str | None, limit: int) -> None:
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "body_too_large", f"request body is {declared} bytes; the limit is {limit}")


def parse_json(body: bytes) -> Any:
    """The parsed body; 422 for an empty one, 400 for one that is not JSON.

    orjson refuses ``NaN``, ``Infinity`` and numbers beyond a double (``1e999``, a 5,000-digit integer). Those
    are values, not syntax: they are read as floats (NaN, +-inf) so that the record validator names the
    record and the feature (a NaN is a missing value; an infinity is refused). Only then, and never for
    nesting past orjson's limit, is the body read a second time, by the standard library. JSON between
    systems is UTF-8 (RFC 8259): a leading byte order mark is ignored, UTF-16 and UTF-32 are refused.
    """
    if not body:
        raise ApiError(422, "validation_error", "request body is empty; expected a JSON object")
    if body.startswith(_UTF8_BOM):  # orjson refuses it; RFC 8259 lets a parser ignore it
        body = body[len(_UTF8_BOM) :]
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        reason = str(exc)
        if "recursion" not in reason:
            value = _with_special_numbers(body)
            if value is not _NOT_JSON:
                return value
        raise ApiError(400, "invalid_json", f"request body is not valid JSON: {reason.split(':')[0]}") from None


_NOT_JSON = object()
_UTF8_BOM = b"\xef\xbb\xbf"


def _with_special_numbers(body: bytes) -> Any:
    """``body`` read by the standard library with NaN/Infinity and out-of-range numbers as floats; _NOT_JSON if
    it is not JSON for other reasons (or holds text orjson cannot write back, such as a lone surrogate)."""
    try:
        # decoded here, strictly: given bytes, the standard library would also read UTF-16 and UTF-32
        value = json.loads(body.decode("utf-8"), parse_int=_int_or_float)
        orjson.dumps(value)  # refuses lone surrogates, which the standard library lets through
    except (ValueError, RecursionError, TypeError, orjson.JSONEncodeError):
        return _NOT_JSON
    return value


def _int_or_float(text: str) -> int | float:
    # as orjson reads them: an integer too long for 64 bits is a float (inf past a double's range), which also
    # keeps Python's 4,300-digit limit on int() out of the way
    return int(text) if len(text) <= 18 else float(text)


def authorize(request: Request, role: KeyRole) -> Principal:
    """The caller's principal if it has ``role``: 401 without a valid key, 403 without the role."""
    presented = key_from_headers(request.headers.get("authorization"), request.headers.get("x-api-key"))
    client = request.client.host if request.client else None
    principal = authorize_key(request.app.state.shipml.auth, presented, role, client)
    request.scope.setdefault("state", {})["principal"] = principal.name
    return principal


def authorize_key(auth: Authenticator, presented: str | None, role: KeyRole, client: str | None) -> Principal:
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
