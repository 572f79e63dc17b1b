"""Fixtures of the fast predictor's tests (test_fast.py, test_columnar.py)."""

from __future__ import annotations

import pytest

from shipml.core.fast.trees import TreeKernel
from tests.support.fitted import native_kernel


@pytest.fixture
def kernel(request: pytest.FixtureRequest) -> TreeKernel | None:
    """The backend a test is parametrised with (``kernels()`` of test_fast.py): None for numpy, else the native
    kernel (built on first use; a skip that says why where this machine cannot build it)."""
    if request.param == "numpy":
        return None
    native, status = native_kernel()
    if native is None:
        pytest.skip(f"no native kernel: {status}")
    return native
