"""The installed `shipml` command answers a typo with its usage and one error line, exit 2 (no traceback)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cli import shipml

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("no-such-command",), "error: No such command 'no-such-command'."),
        (("train", "--no-such-option"), "error: No such option: --no-such-option"),
    ],
)
def test_the_console_script_turns_a_typo_into_usage_and_exit_2(
    tmp_path: Path, args: tuple[str, ...], error: str
) -> None:
    result = shipml(tmp_path, *args, fresh=True)  # the script itself, in a new interpreter
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 2, lines
    assert lines[0].startswith("Usage: shipml")
    assert lines[1].startswith(error)
