"""Issue 18, item 3: the store's outages under load, through real `shipml serve --workers 2` processes on one
Postgres store (a smaller load than the writers' test: one replica, four clients).

- Postgres restarted (``pg_ctl restart -m fast``) and a connection that stops answering (a stall proxy between
  shipml and Postgres): with ``durability: commit``, answers are 200 or 503 ``store_unavailable``; every 503 is
  answered inside [outage start, outage end + 2 s + TOLERANCE_S]; no answer takes longer than ``store.timeout_s``
  + SLACK_S; the service answers 200 again without a restart; every id answered 200 is stored.
- ``durability: async`` over a 5 s restart: a failed commit is retried (idempotent insert) and no answered row is
  lost; with a retry time shorter than the outage, the rows it sheds are counted in rows
  (``shipml_store_rows_dropped_total``) and equal the ids answered 200 but never stored.

TOLERANCE_S (1 s) covers the scheduling noise of a shared 2-core machine between an answer and the clock read
after it; SLACK_S (3 s) is the model's own time plus that noise on top of the wait on the store.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability.load import metric
from tests.scale.store_fleet import (
    KeyedLoad,
    Sent,
    answered_ids,
    figure,
    single,
    start_fleet,
    statuses,
    stop_fleet,
    store_env,
    stored_ids,
)
from tests.support.dialects import fresh_postgres_database
from tests.support.postgres import PostgresServer
from tests.support.server import Keys, Server
from tests.support.stall_proxy import StallProxy

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TIMEOUT_S = 2.0  # store.timeout_s of these services
AFTER_S = 2.0  # the promise: 503s end this long after the outage
TOLERANCE_S = 1.0
SLACK_S = 3.0
CLIENTS = 4


@pytest.fixture(scope="module")
def project(store_project: tuple[Path, Keys]) -> tuple[Path, Keys]:
    return store_project


@pytest.fixture(scope="module")
def server(store_postgres: PostgresServer) -> PostgresServer:
    return store_postgres


@pytest.fixture(scope="module")
def proxy(server: PostgresServer) -> Iterator[StallProxy]:
    relay = StallProxy(server.port)
    yield relay
    relay.close()


@pytest.fixture(scope="module")
def committing(
    project: tuple[Path, Keys], server: PostgresServer, proxy: StallProxy
) -> Iterator[tuple[list[Server], str]]:
    """One replica of two workers, commit durability, its store reached through the stall proxy."""
    root, _ = project
    uri = fresh_postgres_database(server.uri)
    env = store_env(proxy.uri_for(uri), durability="commit", timeout_s=TIMEOUT_S, connect_timeout_s=2)
    fleet = start_fleet(root, replicas=1, workers=2, env=env)
    yield fleet, uri
    stop_fleet(fleet)


def under_load(fleet: list[Server], key: str, outage: object, warm_s: float = 3.0, after_s: float = 5.0) -> tuple[
    list[Sent], float, float
]:  # fmt: skip
    """Keyed single predictions from CLIENTS clients while ``outage()`` runs (after ``warm_s``, followed by
    ``after_s``): every answer, and the outage's start and end (monotonic)."""
    load = KeyedLoad(fleet, key, single, threads=CLIENTS).start()
    time.sleep(warm_s)
    started = time.monotonic()
    outage()  # type: ignore[operator]
    ended = time.monotonic()
    time.sleep(after_s)
    return load.stop(), started, ended


def check_commit_outage(
    name: str, sent: list[Sent], started: float, ended: float, uri: str, stored_before: set[str]
) -> None:
    """The promises of ``durability: commit`` over an outage from ``started`` to ``ended`` (``stored_before``: the
    ids the store held before the load)."""
    failed = [s for s in sent if s.status != 200]
    window = (
        (round(min(s.ended for s in failed) - started, 2), round(max(s.ended for s in failed) - ended, 2))
        if failed
        else None
    )
    answered = answered_ids(sent)
    stored = set(stored_ids(uri)[0]) - stored_before
    figure(
        f"store outage {name}",
        outage_s=round(ended - started, 2), answers=len(sent), statuses=statuses(sent),
        first_503_after_start_s=window[0] if window else None, last_503_after_end_s=window[1] if window else None,
        max_latency_s=round(max(s.latency_s for s in sent), 2), in_doubt=len(stored - set(answered)),
    )  # fmt: skip
    assert all(s.status == 200 or (s.status, s.code) == (503, "store_unavailable") for s in sent), statuses(sent)
    assert failed, "the outage was not seen: no 503 at all"
    outside = [s for s in failed if not started <= s.ended <= ended + AFTER_S + TOLERANCE_S]
    assert not outside, f"{len(outside)} answers 503 outside the outage + {AFTER_S:g} s, e.g. {outside[:2]}"
    slow = [s for s in sent if s.latency_s > TIMEOUT_S + SLACK_S]
    assert not slow, f"{len(slow)} answers waited past store.timeout_s, e.g. {slow[:2]}"
    recovered = [s for s in sent if s.started > ended + AFTER_S + TOLERANCE_S]
    assert recovered and all(s.status == 200 for s in recovered), statuses(recovered)
    assert not set(answered) - stored, "an id answered 200 is not stored"


def test_postgres_restarted_under_load_is_503_only_for_the_outage(
    project: tuple[Path, Keys], server: PostgresServer, committing: tuple[list[Server], str]
) -> None:
    fleet, uri = committing
    before = set(stored_ids(uri)[0])
    sent, started, ended = under_load(fleet, project[1].predict, server.restart)
    check_commit_outage("restart", sent, started, ended, uri, before)


def test_a_connection_that_stops_answering_is_503_only_for_the_outage(
    project: tuple[Path, Keys], proxy: StallProxy, committing: tuple[list[Server], str]
) -> None:
    fleet, uri = committing

    def stall() -> None:
        proxy.stall()
        time.sleep(4.0)
        proxy.flow()

    before = set(stored_ids(uri)[0])
    try:
        sent, started, ended = under_load(fleet, project[1].predict, stall)
    finally:
        proxy.flow()
    check_commit_outage("stall", sent, started, ended, uri, before)


@pytest.mark.parametrize(
    ("retry_s", "down_s"), [(30.0, 5.0), (1.0, 3.0)], ids=["retried-past-the-restart", "shed-and-counted"]
)
def test_async_retries_a_failed_commit_and_counts_what_it_sheds_in_rows(
    project: tuple[Path, Keys], server: PostgresServer, retry_s: float, down_s: float
) -> None:
    root, keys = project
    uri = fresh_postgres_database(server.uri)
    env = store_env(uri, durability="async", timeout_s=TIMEOUT_S, connect_timeout_s=2, async_retry_s=retry_s)
    fleet = start_fleet(root, replicas=1, workers=2, env=env)
    try:

        def restart() -> None:
            server.stop()
            time.sleep(down_s)
            server.start()

        sent, _, _ = under_load(fleet, keys.predict, restart, warm_s=2.0, after_s=2.0)
        dropped = settled(lambda: metric(fleet[0], "shipml_store_rows_dropped_total"))
    finally:
        stop_fleet(fleet)
    answered = answered_ids(sent)
    stored = set(stored_ids(uri)[0])
    lost = set(answered) - stored
    figure(
        "store outage async",
        retry_s=retry_s, down_s=down_s, answered=len(answered), stored=len(stored), lost=len(lost),
        rows_dropped_total=int(dropped), statuses=statuses(sent),
    )  # fmt: skip
    assert all(s.status in (200, 503) for s in sent), statuses(sent)
    assert dropped == len(lost)
    if retry_s > down_s:
        assert not lost, f"{len(lost)} answered rows lost over a {down_s:g} s restart"
    else:
        assert lost, "the outage outlasted the retries, yet nothing was shed"


def settled(read: object, quiet_s: float = 2.0, timeout_s: float = 60.0) -> float:
    """``read()`` once it has not changed for ``quiet_s`` (the writers have finished retrying)."""
    deadline = time.monotonic() + timeout_s
    last = read()  # type: ignore[operator]
    since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = read()  # type: ignore[operator]
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            break
    return float(last)
