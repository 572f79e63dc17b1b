"""The suite's schedule (tests/conftest.py): every module named as one of the longest exists, so a renamed module
is not silently handed out last again."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import LONGEST


def test_every_longest_module_exists() -> None:
    tests = Path(__file__).parents[1]
    assert [m for m in LONGEST if not (tests / m).is_file()] == []
    assert len(set(LONGEST)) == len(LONGEST)
