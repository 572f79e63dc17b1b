"""A component a test needs (a server from Debian's or PyPI's packages) is missing: skip, or fail in `make test-scale`.

`make test` skips a test whose component is missing, printing why, and runs the rest; `make test-scale` sets
SHIPML_REQUIRE_COMPONENTS=1, where the same absence fails the test: the scale lane exists to run them.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def required() -> bool:
    """True in `make test-scale`: a missing component fails its test instead of skipping it."""
    return os.environ.get("SHIPML_REQUIRE_COMPONENTS", "") == "1"


def missing(reason: str) -> NoReturn:
    """Skip (``make test``) or fail (``make test-scale``) with ``reason``: what is missing and how to get it."""
    if required():
        pytest.fail(f"required component missing: {reason}", pytrace=False)
    pytest.skip(reason)
