"""H2 through real processes: `shipml serve` on PostgreSQL reached through a TCP relay that stops relaying (a
failover, a partition, a stuck server). A /metrics scrape must not hand the worker's event loop to the database:
predictions (async durability) and /health/live keep answering, and everything flows again when it comes back."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.dialects import fresh_postgres_database
from tests.support.project import TrainedProject
from tests.support.server import Server, auth, make_keys, records, start_server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ANSWER_S = 20.0  # a generous bound on one answer; before the fix, none came while the database hung


class Relay:
    """A TCP relay on 127.0.0.1 in front of ``port``; ``stall()`` stops passing bytes on (held, connections kept
    open, as a database that stopped answering), ``flow()`` passes them on again."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.flowing = threading.Event()
        self.flowing.set()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        threading.Thread(target=self._accept, name="relay", daemon=True).start()

    def stall(self) -> None:
        self.flowing.clear()

    def flow(self) -> None:
        self.flowing.set()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                self.flowing.wait()
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._listener.close()


@pytest.fixture
def served(trained_project: TrainedProject, postgres_uri: str, tmp_path: Path) -> Iterator[tuple[Server, Relay, str]]:
    database = fresh_postgres_database(postgres_uri)
    relay = Relay(int(database.rsplit(":", 1)[1].split("/")[0]))
    through_relay = database.replace(f":{relay.target}/", f":{relay.port}/")
    keys, auth_yaml = make_keys()
    # connect_timeout_s: long, so that only the read being off the event loop keeps the worker answering
    root = trained_project.workspace(
        tmp_path / "ws", auth_yaml + f"store:\n  uri: {through_relay}\n  durability: async\n  connect_timeout_s: 600\n"
    )
    server = start_server(root)
    try:
        yield server, relay, keys.predict
    finally:
        relay.flow()
        server.stop()
        relay.close()


def test_a_hung_database_does_not_stop_predictions_or_liveness(served: tuple[Server, Relay, str]) -> None:
    server, relay, key = served
    record = {"features": records(1)[0]}

    def predict() -> int:
        return requests.post(f"{server.url}/predict", json=record, headers=auth(key), timeout=ANSWER_S).status_code

    assert predict() == 200
    assert requests.get(f"{server.url}/metrics", timeout=ANSWER_S).status_code == 200

    relay.stall()
    for _ in range(5):  # Prometheus scraping every worker while the database hangs, over a few seconds
        scraped = requests.get(f"{server.url}/metrics", timeout=ANSWER_S)  # the last values read from the store
        assert scraped.status_code == 200 and "shipml_ready 1.0" in scraped.text
        assert predict() == 200  # async durability: answered, queued for the store
        assert requests.get(f"{server.url}/health/live", timeout=ANSWER_S).status_code == 200
        time.sleep(0.5)

    relay.flow()
    assert predict() == 200
