"""Windows over the store: what a user types, and the one-line errors of what they mistype."""

from __future__ import annotations

import pytest

from shipml.core.window import Window, duration_s, parse_window
from shipml.errors import ConfigError

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


@pytest.mark.parametrize(
    ("window", "since", "until", "message"),
    [
        (None, "nan", None, "--since: must be a time between 1970-01-01 and 9999-12-31, got 'nan'"),
        (None, "inf", None, "--since: must be a time between 1970-01-01 and 9999-12-31, got 'inf'"),
        (None, "1e20", None, "--since: must be a time between 1970-01-01 and 9999-12-31, got '1e20'"),
        (None, "-1e12", None, "--since: must be a time between 1970-01-01 and 9999-12-31, got '-1e12'"),
        (None, "1969-12-31T23:00Z", None, "--since: must be a time between 1970-01-01 and 9999-12-31"),
        (None, "0001-01-01T00:00+01:00", None, "--since: "),
        (None, "1795593600", "nan", "--until: must be a time between 1970-01-01 and 9999-12-31, got 'nan'"),
        ("99999999d", None, None, "--window: must be at most 2932896d (years 1970 to 9999), got '99999999d'"),
        ("30000d", None, None, "--window: '30000d' before 2027-01-15T08:00:00+00:00 starts before 1970-01-01"),
    ],
)
def test_instants_outside_1970_to_9999_and_windows_that_do_not_fit_are_one_line_errors(
    window: str | None, since: str | None, until: str | None, message: str
) -> None:
    """Correctness review L4: these ended in a traceback (or ran the job and stored a report first)."""
    with pytest.raises(ConfigError) as caught:
        parse_window(window, since, until, now=NOW)
    assert len(caught.value.lines()) == 1 and caught.value.lines()[0].startswith(message), caught.value.lines()


def test_the_ends_of_the_range_are_accepted() -> None:
    assert parse_window(None, "0", "9999-12-31T23:59:59Z", now=NOW) == Window(0.0, 253402300799.0)
    assert duration_s("2932896d", "--interval") == 2932896 * 86400.0


def test_slices_cover_the_window() -> None:
    slices = Window(0.0, 3600.0).slices(4)
    assert slices[0] == (0.0, 900.0) and slices[-1] == (2700.0, 3600.0) and len(slices) == 4
