"""The ceiling of the HTTP stack: a bare ASGI app on uvicorn that reads the body, parses it with orjson and
answers with orjson. No framework, no model, no checks: what uvicorn, httptools and uvloop cost on their own."""

from __future__ import annotations

from typing import Any

import orjson

_HEADERS = [(b"content-type", b"application/json")]
_READY = orjson.dumps({"ok": True})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":  # lifespan: nothing to start
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
            message = await receive()
        if message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    if scope["method"] == "POST":
        features = orjson.loads(body)["features"]
        payload = orjson.dumps({"ok": True, "features": len(features)})
    else:
        payload = _READY
    headers = [*_HEADERS, (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
