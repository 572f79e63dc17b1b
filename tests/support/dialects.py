"""The store's dialects for its conformance suite: SQLite in a temporary file, and a fresh database on the
session's real PostgreSQL (tests.support.postgres; skipped, with the reason, when it cannot start)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

# A new dialect joins the suite by adding one parameter here.
DIALECTS = ["sqlite", pytest.param("postgres", marks=[pytest.mark.integration])]


def fresh_postgres_database(server_uri: str) -> str:
    """A new, empty database on the server of ``server_uri``: each test gets its own tables."""
    name = "shipml_" + uuid.uuid4().hex[:16]
    engine = sa.create_engine(server_uri, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    engine.dispose()
    return server_uri.rsplit("/", 1)[0] + "/" + name


def store_uri_for(request: pytest.FixtureRequest, dialect: str, tmp_path: Path, name: str = "p") -> str:
    if dialect == "sqlite":
        return f"sqlite:///{tmp_path}/{name}.db"
    return fresh_postgres_database(request.getfixturevalue("postgres_uri"))
