"""The scale lane (`make test-scale`): tests that each take minutes or start a fleet of real components
(Postgres with many writers, an MLflow server on Postgres and S3, outages under load). Every test here is marked
``scale``; `make test` deselects them, `make test-scale` runs them and fails where a component is missing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability.load import make_project
from tests.support.postgres import PostgresServer, start_postgres, stop_postgres
from tests.support.server import Keys
from tests.support.shared_registry import SharedRegistry, shared_registry_running

HERE = Path(__file__).parent


@pytest.hookimpl(tryfirst=True)  # marked before `-m "not scale"` deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.scale)


@pytest.fixture(scope="session")
def store_project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Keys]:
    """A trained churn project (churn/1 in production) and its keys, shared by the store's scale tests."""
    root = tmp_path_factory.mktemp("store-scale")
    return root, make_project(root)


@pytest.fixture(scope="session")
def store_postgres() -> Iterator[PostgresServer]:
    """A Postgres of the store's scale tests, with a new server's defaults (max_connections 100): they fill it,
    restart it and stop it, so not the session's shared one."""
    pg = start_postgres()
    yield pg
    stop_postgres(pg)


@pytest.fixture(scope="module")
def shared_registry(postgres_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedRegistry]:
    """One shared registry (tests/support/shared_registry.py) per test module: its own Postgres database, bucket
    and MLflow server."""
    with shared_registry_running(postgres_uri, tmp_path_factory.mktemp("shared-registry")) as registry:
        yield registry


@pytest.fixture(scope="session")
def spark_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained churn project (churn/1 in production, 2,000 rows) shared by the Spark tests."""
    from tests.support.spark import project

    return project(tmp_path_factory.mktemp("spark"))
