"""The store's versioned migrations: applied once each, on a fresh database and on one made by the first store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from shipml.adapters.store import (
    LATEST,
    MIGRATIONS,
    PredictionStore,
    StoreError,
    migrate,
    migrations,
    tables,
)
from shipml.core.schema import Feature, FeatureSchema, Target
from tests.support.dialects import DIALECTS, store_uri_for
from tests.support.logged import logged

SCHEMA = FeatureSchema(
    (Feature("tenure", "numeric"), Feature("contract", "categorical")), Target("churn", "binary", ("0", "1"))
)


@pytest.fixture(params=DIALECTS)
def store_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return store_uri_for(request, str(request.param), tmp_path)


def versions(engine: sa.Engine) -> list[tuple[int, str]]:
    with engine.connect() as conn:
        v = tables.schema_version.c
        return [tuple(r) for r in conn.execute(sa.select(v.version, v.name).order_by(v.version))]  # type: ignore[misc]


def test_a_fresh_store_gets_every_migration_once_and_the_described_tables(store_uri: str) -> None:
    store = PredictionStore(store_uri)
    assert versions(store.database.engine) == [(m.version, m.name) for m in MIGRATIONS]
    assert [m.version for m in MIGRATIONS] == list(range(1, LATEST + 1))
    assert LATEST == 11 and versions(store.database.engine)[-1] == (11, "routing announcements")
    inspector = sa.inspect(store.database.engine)
    for table in tables.metadata.tables.values():
        assert [c["name"] for c in inspector.get_columns(table.name)] == [c.name for c in table.columns]
    indexes = {i["name"]: i["column_names"] for i in inspector.get_indexes("predictions")}
    assert indexes == {"ix_predictions_model_variant_ts": ["model", "variant", "ts"]}
    store.close()
    again = PredictionStore(store_uri)  # reopening applies nothing
    assert migrate(again.database.engine, again.database.lock_path) == []
    assert len(versions(again.database.engine)) == LATEST
    again.close()


def _first_store(uri: str) -> None:
    """The tables the first store made (before schema_version), with two f_* columns and one row."""
    meta = sa.MetaData()
    predictions = sa.Table(
        "predictions", meta,
        sa.Column("id", sa.String(36), primary_key=True), sa.Column("ts", sa.Float, nullable=False, index=True),
        sa.Column("model", sa.String(200), nullable=False), sa.Column("version", sa.String(20), nullable=False),
        sa.Column("variant", sa.String(50), nullable=False), sa.Column("features", sa.Text, nullable=False),
        sa.Column("outputs", sa.Text, nullable=False), sa.Column("latency_ms", sa.Float, nullable=False),
    )  # fmt: skip
    sa.Table(
        "feedback", meta,
        sa.Column("prediction_id", sa.String(36), primary_key=True), sa.Column("ts", sa.Float, nullable=False),
        sa.Column("label", sa.String(200)), sa.Column("value", sa.Float),
    )  # fmt: skip
    engine = sa.create_engine(uri)
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql(f'ALTER TABLE predictions ADD COLUMN "f_tenure" {sa.Float().compile(engine.dialect)}')
        conn.exec_driver_sql('ALTER TABLE predictions ADD COLUMN "f_contract" TEXT')
        conn.execute(
            predictions.insert().values(
                id="old-1", ts=5.0, model="churn", version="1", variant="main",
                features='{"tenure": 12.0, "contract": "two-year"}',
                outputs='{"predicted_class": "1", "probabilities": {"0": 0.4, "1": 0.6}}', latency_ms=2.0,
            )
        )  # fmt: skip
        conn.exec_driver_sql("UPDATE predictions SET f_tenure = 12.0, f_contract = 'two-year'")
    engine.dispose()


def test_a_store_made_by_the_first_version_opens_and_keeps_its_rows_readable(store_uri: str) -> None:
    _first_store(store_uri)
    store = PredictionStore(store_uri)
    assert [v for v, _ in versions(store.database.engine)] == list(range(1, LATEST + 1))
    old = store.predictions.get("old-1")
    assert old is not None and old.features == {"tenure": 12.0, "contract": "two-year"}
    assert (old.served.role, old.served.schema_sha256, old.status, old.label) == ("primary", "", "ok", "1")
    # the columns added since (label, score) are empty for the old row; its outputs hold the answer
    first = store.predictions.read_window("churn", 0, 10)
    assert (first.label.tolist(), np.isnan(first.score).tolist()) == ([None], [True])
    store.predictions.register_schema(SCHEMA)
    sha = SCHEMA.sha256()
    store.predictions.write([[logged("new-1", 6.0, "churn", "2", "main", {"tenure": 3.0, "contract": "monthly"}, {}, 1.0,
                               schema_sha256=sha)]])  # fmt: skip
    window = store.predictions.read_window("churn", 0, 10)
    assert window.ids.tolist() == ["old-1", "new-1"]
    assert window.features["tenure"].tolist() == [12.0, 3.0]
    assert window.features["contract"].tolist() == ["two-year", "monthly"]
    assert store.feedback.add("old-1", "x" * 300, None)  # the label column was widened (review M3)
    got = store.feedback.get("old-1")
    assert got is not None and got.label == "x" * 300
    assert {c["name"] for c in sa.inspect(store.database.engine).get_columns("predictions")} >= {
        "f_tenure",
        "f_contract",
    }
    store.close()


def _store_at_migration_3(uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store as the code of migration 3 left it, with one logged prediction (no status column yet)."""
    monkeypatch.setattr(migrations, "MIGRATIONS", MIGRATIONS[:3])
    url = sa.engine.make_url(uri)
    lock_path = Path(f"{url.database}.writelock") if url.get_backend_name() == "sqlite" else None
    engine = sa.create_engine(uri)
    assert migrate(engine, lock_path) == [1, 2, 3]
    names = [n for n in tables.BASE_COLUMNS if n != "status"]
    old = dict(zip(names, ["old-1", 5.0, "churn", "1", "main", "primary", None, "", "1", 0.6,
                           '{"tenure": 12.0, "contract": "two-year"}', "{}", 2.0], strict=True))  # fmt: skip
    with engine.begin() as conn:
        conn.execute(sa.insert(sa.table("predictions", *[sa.column(n) for n in names])).values(old))
    engine.dispose()
    monkeypatch.setattr(migrations, "MIGRATIONS", MIGRATIONS)


def test_a_store_at_migration_3_gets_the_row_status_and_its_rows_read_as_predictions(
    store_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _store_at_migration_3(store_uri, monkeypatch)
    store = PredictionStore(store_uri)
    assert versions(store.database.engine) == [(m.version, m.name) for m in MIGRATIONS]
    columns = [c["name"] for c in sa.inspect(store.database.engine).get_columns("predictions")]
    assert columns == [c.name for c in tables.predictions.columns]  # status last, as tables.py says
    old = store.predictions.get("old-1")
    assert old is not None and (old.status, old.features) == ("ok", {"tenure": 12.0, "contract": "two-year"})
    store.predictions.write([[logged("bad-1", 6.0, "churn", "1", "main", {"tenure": "x"}, {}, 1.0, status="invalid")]])
    assert (store.predictions.count(), store.predictions.count(status=None)) == (1, 2)
    assert store.predictions.read_window("churn", 0, 10).ids.tolist() == ["old-1"]
    assert store.predictions.get("bad-1").status == "invalid"  # type: ignore[union-attr]
    store.close()


def test_registering_a_schema_from_two_stores_writes_its_catalog_once(store_uri: str) -> None:
    stores = [PredictionStore(store_uri) for _ in range(2)]
    for s in stores:
        s.predictions.register_schema(SCHEMA)
        s.predictions.register_schema(SCHEMA)
    with stores[0].database.engine.connect() as conn:
        c = tables.feature_catalog.c
        got = conn.execute(sa.select(c.feature, c.kind, c.slot).order_by(c.position)).all()
    assert [tuple(r) for r in got] == [("tenure", "numeric", "n0"), ("contract", "categorical", "c0")]
    for s in stores:
        s.close()


def test_a_failing_migration_is_rolled_back_whole_and_reported_as_a_store_error(
    store_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    PredictionStore(store_uri).close()

    def half_done(conn: sa.Connection) -> None:
        conn.exec_driver_sql("ALTER TABLE predictions ADD COLUMN half_done TEXT")
        conn.exec_driver_sql("SELECT no_such_column FROM predictions")

    monkeypatch.setattr(migrations, "MIGRATIONS", (*MIGRATIONS, migrations.Migration(LATEST + 1, "broken", half_done)))
    with pytest.raises(StoreError, match=r"store.uri: cannot open .*no_such_column"):
        PredictionStore(store_uri)
    monkeypatch.setattr(migrations, "MIGRATIONS", MIGRATIONS)
    store = PredictionStore(store_uri)
    assert len(versions(store.database.engine)) == LATEST
    assert "half_done" not in {c["name"] for c in sa.inspect(store.database.engine).get_columns("predictions")}
    store.close()
