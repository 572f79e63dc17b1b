"""A window of time over the prediction store, and the parsers of what people type for one.

Every job that reads the store over time takes a ``Window`` (monitoring, `ab report`, the canary's evidence, the
report's history). People give one as a duration ending now (``--window 24h``, ``monitor.window``) or as instants
(``--since``/``--until``: ISO 8601 or Unix seconds). An instant is finite and between 1970-01-01 and the end of
year 9999 (what a date can print), a duration is positive and no longer than that span, and a window fits within
it; anything else is a ``ConfigError`` of one line naming the flag, before any job runs.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from shipml.errors import ConfigError

EARLIEST = 0.0  # 1970-01-01T00:00:00Z
LATEST = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*")


@dataclass(frozen=True)
class Window:
    """[since, until) in Unix seconds."""

    since: float
    until: float

    def slices(self, n: int) -> list[tuple[float, float]]:
        """The window cut in ``n`` equal slices."""
        step = (self.until - self.since) / n
        return [(self.since + i * step, self.since + (i + 1) * step) for i in range(n)]


def parse_window(window: str | None, since: str | None, until: str | None, now: float | None = None) -> Window:
    """``--window 24h`` (ending now), or ``--since T [--until T]`` (ISO 8601 or Unix seconds). Bad input: ConfigError."""
    now = time.time() if now is None else now
    if window is not None and since is not None:
        raise ConfigError(["--window and --since: give one of them (a window ends now; --since starts one)"])
    end = instant(until, "--until") if until is not None else now
    if since is not None:
        start = instant(since, "--since")
    else:
        text = window or "24h"
        start = end - duration_s(text, "--window")
        if start < EARLIEST:
            raise ConfigError([f"--window: {text!r} before {_iso(end)} starts before 1970-01-01"])
    if not start < end:
        raise ConfigError([f"window: the start ({_iso(start)}) must be before the end ({_iso(end)})"])
    return Window(start, end)


def duration_s(text: str, what: str) -> float:
    """``90s``, ``30m``, ``24h``, ``7d``, ``2w`` in seconds; ``what`` (the flag or key) locates an error."""
    problem = duration_problem(text)
    if problem is not None:
        raise ConfigError([f"{what}: {problem}"])
    return _seconds(text)


def duration_problem(text: str) -> str | None:
    """What is wrong with ``text`` as a duration (None: nothing), for validators that locate it themselves."""
    found = _DURATION.fullmatch(text)
    if found is None or float(found.group(1)) <= 0:
        return f"expected a positive duration such as 30m, 24h or 7d, got {text!r}"
    if _seconds(text) > LATEST - EARLIEST:
        return f"must be at most {int((LATEST - EARLIEST) // _UNITS['d'])}d (years 1970 to 9999), got {text!r}"
    return None


def instant(text: str, what: str) -> float:
    """An ISO 8601 time (naive means UTC) or Unix seconds, between 1970 and the end of year 9999."""
    try:
        ts = float(text)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(text)
            ts = (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
        except (ValueError, OverflowError):
            raise ConfigError(
                [f"{what}: expected an ISO 8601 time (2026-11-25T08:00Z) or Unix seconds, got {text!r}"]
            ) from None
    if not (math.isfinite(ts) and EARLIEST <= ts <= LATEST):
        raise ConfigError([f"{what}: must be a time between 1970-01-01 and 9999-12-31, got {text!r}"])
    return ts


def _seconds(text: str) -> float:
    found = _DURATION.fullmatch(text)
    assert found is not None  # noqa: S101 - checked by duration_problem
    return float(found.group(1)) * _UNITS[found.group(2)]


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")
