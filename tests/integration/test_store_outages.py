"""The store on a Postgres that fails under it, at the store's level (the service under load: tests/scale/): a
connection that stops answering is cut after ``store.timeout_s``, a restarted server is reconnected to without a
restart of shipml, and a refused connection (the pool exhausted, the server's ``max_connections`` reached) is a
``StoreError`` (a 503 in the service), never a hang."""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import requests

from shipml.adapters.store import PredictionStore, StoreWriter
from shipml.errors import StoreError
from tests.support.dialects import fresh_postgres_database
from tests.support.postgres import PostgresServer, start_postgres, stop_postgres
from tests.support.project import CONFIG, train_project
from tests.support.server import auth, make_keys, records, start_server
from tests.support.stall_proxy import StallProxy
from tests.unit.adapters.test_store_writer_faults import rows

pytestmark = [pytest.mark.integration]

HANG_GUARD_S = 60.0  # a call still running after this has hung (the promise is store.timeout_s)


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    """A server of this module's own (it is restarted and filled), ``max_connections`` small enough to fill."""
    pg = start_postgres(("max_connections=12", "superuser_reserved_connections=0"))
    yield pg
    stop_postgres(pg)


def in_thread(call: object) -> object:
    """``call()`` in a thread, its result or exception; a call still running after HANG_GUARD_S fails the test."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        future = pool.submit(call)  # type: ignore[arg-type]
        return future.result(timeout=HANG_GUARD_S)


def test_a_connection_that_stops_answering_is_cut_and_the_store_recovers(server: PostgresServer) -> None:
    uri = fresh_postgres_database(server.uri)
    proxy = StallProxy(server.port)
    store = PredictionStore(proxy.uri_for(uri), timeout_s=1.0, statement_timeout_s=1.0, connect_timeout_s=2.0)
    writer = StoreWriter(store, queue_size=10_000, batch_max=512)
    try:
        writer.submit_many(rows(3, "before")).result(timeout=HANG_GUARD_S)
        proxy.stall()
        with pytest.raises(StoreError):  # the write's connection is cut, its retry cannot connect
            writer.submit_many(rows(3, "during")).result(timeout=HANG_GUARD_S)
        with pytest.raises(StoreError):  # a read too (its statement may run statement_timeout_s + timeout_s)
            in_thread(store.predictions.count)
        assert store.database.watchdog.cuts >= 1
        proxy.flow()
        writer.submit_many(rows(3, "after")).result(timeout=HANG_GUARD_S)
        assert in_thread(store.predictions.count) in (6, 9)  # "during": in doubt (its insert may have arrived)
    finally:
        proxy.flow()
        writer.close()
        store.close()
        proxy.close()


def test_a_restarted_server_is_reconnected_to_without_an_error_after_it(server: PostgresServer) -> None:
    store = PredictionStore(fresh_postgres_database(server.uri), timeout_s=2.0)
    try:
        store.predictions.write([rows(2, "a")])
        assert store.predictions.count() == 2  # a pooled connection now exists
        server.restart()
        store.predictions.write([rows(2, "b")])  # the dead pooled connection is replaced at checkout
        assert store.predictions.count() == 4
    finally:
        store.close()


def test_an_exhausted_pool_is_a_store_error_after_store_timeout(server: PostgresServer) -> None:
    store = PredictionStore(fresh_postgres_database(server.uri), timeout_s=0.5, pool_size=1, pool_max_overflow=0)
    held = threading.Event()
    done = threading.Event()

    def hold() -> None:
        with store.database.reading("hold the pool's only connection"):
            held.set()
            done.wait(HANG_GUARD_S)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(HANG_GUARD_S)
        with pytest.raises(StoreError, match="store: "):
            in_thread(store.predictions.count)
    finally:
        done.set()
        holder.join()
    assert store.predictions.count() == 0
    store.close()


def test_the_servers_connection_limit_is_a_store_error_then_recovers(server: PostgresServer) -> None:
    store = PredictionStore(fresh_postgres_database(server.uri), timeout_s=2.0)
    fillers: list[psycopg.Connection] = []
    try:
        assert store.predictions.count() == 0
        dsn = server.uri.replace("postgresql+psycopg://", "postgresql://")
        with contextlib.suppress(psycopg.OperationalError):  # "sorry, too many clients already"
            while len(fillers) < 50:
                fillers.append(psycopg.connect(dsn, autocommit=True))
        # the store's pooled connection is ended (waited for: its slot is free after); the slot is taken again
        fillers[0].execute(
            "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
            "AND backend_type = 'client backend' AND datname <> 'postgres'"
        )
        with contextlib.suppress(psycopg.OperationalError):
            while len(fillers) < 50:
                fillers.append(psycopg.connect(dsn, autocommit=True))
        with pytest.raises(StoreError, match="too many clients"):
            in_thread(store.predictions.count)
        for conn in fillers:
            conn.close()
        fillers.clear()
        assert store.predictions.count() == 0
    finally:
        for conn in fillers:
            conn.close()
        store.close()


def test_the_service_answers_503_not_500_when_postgres_refuses_connections(
    server: PostgresServer, tmp_path: Path
) -> None:
    """`shipml serve` whose connections are ended while its database refuses new ones: /predict answers 503
    store_unavailable (not a 500, not a hang), then 200 again once connections are accepted, without a restart."""
    train_project(tmp_path, rows=1_500)
    keys, auth_yaml = make_keys()
    (tmp_path / "shipml.yaml").write_text(CONFIG + auth_yaml)
    uri = fresh_postgres_database(server.uri)
    database = uri.rsplit("/", 1)[1]
    service = start_server(tmp_path, env={"SHIPML_STORE__URI": uri, "SHIPML_STORE__TIMEOUT_S": "2"})
    body = {"features": records(1)[0]}
    admin = psycopg.connect(server.uri.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)

    def predict() -> requests.Response:
        return requests.post(f"{service.url}/predict", json=body, headers=auth(keys.predict), timeout=HANG_GUARD_S)

    try:
        assert predict().status_code == 200
        admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        admin.execute("SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity WHERE datname = %s", (database,))
        refused = predict()
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "store_unavailable"
        admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        deadline = time.monotonic() + HANG_GUARD_S
        while (answer := predict()).status_code != 200:
            assert time.monotonic() < deadline, answer.text
            time.sleep(0.5)
    finally:
        admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        admin.close()
        assert service.stop() == 0
