"""Past serve.max_in_flight a worker answers 503 at once, and admits again as soon as requests finish."""

from __future__ import annotations

import asyncio
from typing import Any

from shipml.server.admission import Admission


def test_requests_past_the_limit_are_refused_at_once_and_health_always_passes() -> None:
    release = asyncio.Event()
    refused: list[int] = []

    async def slow_app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] != "/health/ready":
            await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    admission = Admission(slow_app, limit=3, on_refused=lambda: refused.append(1))

    async def call(path: str) -> int:
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await admission({"type": "http", "path": path, "method": "POST", "headers": []}, None, send)
        return int(sent[0]["status"])

    async def scenario() -> tuple[list[int], int, int, int]:
        admitted = [asyncio.create_task(call("/predict")) for _ in range(3)]
        await asyncio.sleep(0.01)
        over = await call("/predict")  # answered while the three are still in flight
        health = await call("/health/ready")
        release.set()
        statuses = list(await asyncio.gather(*admitted))
        after = await call("/predict")
        return statuses, over, health, after

    statuses, over, health, after = asyncio.run(scenario())
    assert statuses == [200, 200, 200]
    assert over == 503 and refused == [1]
    assert health == 200 and after == 200
    assert admission.in_flight == 0
