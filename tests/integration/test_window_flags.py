"""Correctness review L4 through the real command: window flags that used to end in a traceback (some after the
job had run and stored a report) are one line and exit 2, before anything is opened."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cli import one_error_line, shipml

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--since", "nan"), "--since: must be a time between 1970-01-01 and 9999-12-31, got 'nan'"),
        (("--since", "1e20"), "--since: must be a time between 1970-01-01 and 9999-12-31, got '1e20'"),
        (("--since=-1e12",), "--since: must be a time between 1970-01-01 and 9999-12-31, got '-1e12'"),
        (("--window", "99999999d"), "--window: must be at most 2932896d (years 1970 to 9999), got '99999999d'"),
    ],
)
def test_monitor_drift_refuses_windows_outside_1970_to_9999(
    tmp_path: Path, args: tuple[str, ...], expected: str
) -> None:
    line = one_error_line(shipml(tmp_path, "monitor", "drift", "--model", "churn", *args))
    assert line == f"error: {expected}"
    assert not (tmp_path / ".shipml").exists()  # no store opened, no report written


def test_a_canary_interval_longer_than_the_calendar_is_refused(tmp_path: Path) -> None:
    line = one_error_line(shipml(tmp_path, "deploy", "canary", "churn", "2", "--interval", "99999999999d"))
    assert line == "error: --interval: must be at most 2932896d (years 1970 to 9999), got '99999999999d'"
