"""The scale lane (`make test-scale`): tests that each take minutes or start a fleet of real components
(Postgres with many writers, an MLflow server on Postgres and S3, outages under load). Every test here is marked
``scale``; `make test` deselects them, `make test-scale` runs them and fails where a component is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.hookimpl(tryfirst=True)  # marked before `-m "not scale"` deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.scale)
