"""The service's log: structlog JSON lines on stdout, written in bursts."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import BinaryIO

import orjson
import structlog


class LineBuffer:
    """structlog's output: JSON lines written to stdout in bursts (one system call per burst, not per
    request); warnings and errors, and anything older than ``interval`` seconds, go out at once.

    Thread-safe: the store writer's thread logs its failures here while the event loop appends and
    flushes request lines, and a failing store is exactly when the log must not lose or merge lines.
    """

    def __init__(self, stream: BinaryIO, interval: float = 0.2) -> None:
        self.stream = stream
        self.interval = interval
        self._lines: list[bytes] = []
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def msg(self, message: bytes) -> None:
        with self._lock:
            self._lines.append(message)
            now = time.monotonic()
            if now - self._last >= self.interval or len(self._lines) >= 256:
                self._flush(now)

    def urgent(self, message: bytes) -> None:
        with self._lock:
            self._lines.append(message)
            self._flush(time.monotonic())

    def flush(self, now: float | None = None) -> None:
        with self._lock:
            self._flush(now)

    def flush_if_idle(self) -> None:
        """Flush when nothing was written for one interval (quiet periods still see their lines)."""
        with self._lock:
            if time.monotonic() - self._last >= self.interval:
                self._flush(None)

    def _flush(self, now: float | None) -> None:
        if self._lines:
            self._lines.append(b"")
            self.stream.write(b"\n".join(self._lines))
            self.stream.flush()
            self._lines = []
        self._last = now if now is not None else time.monotonic()

    debug = info = msg
    warning = warn = error = critical = exception = fatal = urgent


async def flush_every(output: LineBuffer) -> None:
    """Quiet periods still see their log lines within one interval."""
    while True:
        await asyncio.sleep(output.interval)
        output.flush_if_idle()


def configure_logging(output: LineBuffer) -> None:
    """structlog as JSON lines on stdout."""
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=orjson.dumps),
        ],
        logger_factory=lambda *_: output,
        cache_logger_on_first_use=True,
    )
    logging.getLogger("uvicorn.access").disabled = True  # one line per request is ours
