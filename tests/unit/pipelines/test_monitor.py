"""The monitoring job's window parsing: what a user types, and the one-line errors of what they mistype."""

from __future__ import annotations

import pytest

from shipml.errors import ConfigError
from shipml.pipelines.monitor import Window, duration_s, parse_window

NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("30m", 1800), ("24h", 86400), ("7d", 604800), ("1.5h", 5400)]
)
def test_durations(text: str, seconds: float) -> None:
    assert duration_s(text, "--window") == seconds


def test_a_window_ends_now_and_since_until_take_iso_or_unix_seconds() -> None:
    assert parse_window("1h", None, None, now=NOW) == Window(NOW - 3600, NOW)
    assert parse_window(None, None, None, now=NOW) == Window(NOW - 86400, NOW)
    assert parse_window(None, "2026-11-25T08:00Z", "2026-11-25T09:00:00+00:00", now=NOW) == Window(
        1795593600.0, 1795597200.0
    )
    assert parse_window(None, "1795593600", None, now=NOW) == Window(1795593600.0, NOW)
    assert parse_window(None, "2026-11-25T08:00", "2026-11-25T08:30", now=NOW).since == 1795593600.0  # naive is UTC


@pytest.mark.parametrize(
    ("window", "since", "until", "message"),
    [
        ("5x", None, None, "--window: expected a positive duration such as 30m, 24h or 7d, got '5x'"),
        ("0h", None, None, "--window: expected a positive duration"),
        ("1h", "2026-11-25T08:00Z", None, "--window and --since: give one of them"),
        (None, "yesterday", None, "--since: expected an ISO 8601 time"),
        (
            None,
            "2026-11-25T09:00Z",
            "2026-11-25T08:00Z",
            "window: the start (2026-11-25T09:00:00+00:00) must be before",
        ),
    ],
)
def test_bad_windows_are_one_line_errors(
    window: str | None, since: str | None, until: str | None, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_window(window, since, until, now=NOW)
    assert len(caught.value.lines()) == 1 and caught.value.lines()[0].startswith(message)


def test_slices_cover_the_window() -> None:
    slices = Window(0.0, 3600.0).slices(4)
    assert slices[0] == (0.0, 900.0) and slices[-1] == (2700.0, 3600.0) and len(slices) == 4
