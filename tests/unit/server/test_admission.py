"""Past serve.max_in_flight a worker answers 503 at once, and admits again as soon as requests finish."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

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


def test_a_refusal_has_retry_after_and_the_shape_of_the_protocol_the_path_speaks() -> None:
    release = asyncio.Event()

    async def slow_app(scope: Any, receive: Any, send: Any) -> None:
        await release.wait()

    admission = Admission(slow_app, limit=1)

    async def refusal(path: str) -> tuple[int, dict[bytes, bytes], Any]:
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await admission({"type": "http", "path": path, "method": "POST", "headers": []}, None, send)
        return sent[0]["status"], dict(sent[0]["headers"]), orjson.loads(sent[1]["body"])

    async def scenario() -> list[tuple[int, dict[bytes, bytes], Any]]:
        busy = asyncio.create_task(admission({"type": "http", "path": "/predict", "headers": []}, None, None))
        await asyncio.sleep(0.01)
        answers = [await refusal(p) for p in ("/predict", "/v2/models/churn/infer", "/invocations")]
        release.set()
        await busy
        return answers

    message = "the service is at capacity; retry later"
    shipml_answer, v2_answer, mlflow_answer = asyncio.run(scenario())
    for status, headers, _ in (shipml_answer, v2_answer, mlflow_answer):
        assert status == 503 and headers[b"retry-after"] == b"1"
        assert headers[b"content-type"] == b"application/json"
    assert shipml_answer[2] == {"error": {"code": "overloaded", "message": message}}
    assert v2_answer[2] == {"error": message}
    assert mlflow_answer[2]["error_code"] == "SERVICE_UNAVAILABLE" and mlflow_answer[2]["message"] == message
