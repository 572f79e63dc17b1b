"""The store's canaries and leases, on every dialect: the canary is a core value read back with its token, every
write is one compare-and-set (correctness review M2), and leases fit their columns and fail as StoreError (M4)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from shipml.adapters.store import PredictionStore, StoreError
from shipml.adapters.store import leases as lease_ids
from shipml.core.canary import Canary, CanaryEvent, Evidence, abort, check
from tests.support.dialects import DIALECTS, store_uri_for

START = 1_000.0


@pytest.fixture(params=DIALECTS)
def store_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return store_uri_for(request, str(request.param), tmp_path)


@pytest.fixture
def store(store_uri: str) -> Iterator[PredictionStore]:
    s = PredictionStore(store_uri)
    yield s
    s.close()


def started(store: PredictionStore) -> Canary:
    canary = Canary("churn", "2", "main", (50.0, 75.0, 100.0), 60.0, 10, START, START, reason="started at 50 %")
    saved = store.canaries.save(canary, CanaryEvent.of("started", canary), expect=None)
    assert saved is not None
    return saved


def test_a_canary_reads_back_as_the_value_written_with_its_token_and_its_log(store: PredictionStore) -> None:
    first = started(store)
    assert store.canaries.read("churn") == first and first.updated_at > 0
    assert store.canaries.read("other") is None
    held = check(first, Evidence(step_requests=1), START + 60)
    second = store.canaries.save(held.state, held.logged(), expect=first.updated_at)
    assert second is not None and second.updated_at > first.updated_at and second.hold == "traffic"
    assert store.canaries.all() == [second]
    log = store.canaries.events("churn")
    assert [(e.event, e.status, e.percent) for e in log] == [("started", "running", 50.0), ("held", "held", 50.0)]
    assert [e.ts for e in log] == [first.updated_at, second.updated_at]
    assert store.canaries.events("churn", since=second.updated_at) == log[1:]


def test_a_write_on_a_stale_token_or_a_second_start_changes_nothing(store: PredictionStore) -> None:
    first = started(store)
    assert store.canaries.save(first, CanaryEvent.of("started", first), expect=None) is None  # one exists already
    aborted = abort(first, START + 1, "by hand")
    assert store.canaries.save(aborted.state, aborted.logged(), expect=first.updated_at) is not None
    held = check(first, Evidence(step_requests=1), START + 60)  # a tick that read before the abort
    assert store.canaries.save(held.state, held.logged(), expect=first.updated_at) is None
    assert store.canaries.read("churn").status == "aborted"  # type: ignore[union-attr]
    assert [e.event for e in store.canaries.events("churn")] == ["started", "aborted"]


def delay_canary_updates(store: PredictionStore, seconds: float) -> None:
    """Every UPDATE of ``canaries`` by ``store`` waits ``seconds`` before it runs (the review's reproduction)."""

    def slow(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE CANARIES"):
            time.sleep(seconds)

    sa.event.listen(store.database.engine, "before_cursor_execute", slow)


def test_two_writers_with_the_same_token_never_both_win(store_uri: str) -> None:
    """M2: writer A (advancing) is slowed inside its transaction while B (aborting) writes with the same token.
    On Postgres both used to succeed, the abort overwritten and both events logged."""
    a, b = PredictionStore(store_uri), PredictionStore(store_uri)
    try:
        first = started(a)
        delay_canary_updates(a, 0.5)
        advanced = check(first, Evidence(step_requests=100), START + 60)
        aborted = abort(first, START + 1, "by hand")
        won: dict[str, bool] = {}

        def advance() -> None:
            won["advance"] = a.canaries.save(advanced.state, advanced.logged(), expect=first.updated_at) is not None

        thread = threading.Thread(target=advance)
        thread.start()
        time.sleep(0.1)  # A is inside its write
        won["abort"] = b.canaries.save(aborted.state, aborted.logged(), expect=first.updated_at) is not None
        thread.join()
        assert sorted(won.values()) == [False, True]
        winner = "advanced" if won["advance"] else "aborted"
        assert [e.event for e in b.canaries.events("churn")] == ["started", winner]
        assert b.canaries.read("churn").status == ("running" if won["advance"] else "aborted")  # type: ignore[union-attr]
    finally:
        a.close()
        b.close()


def test_a_lease_is_released_by_its_holder_only_and_says_who_holds_it(store: PredictionStore) -> None:
    assert store.leases.acquire("canary:churn", "a", ttl_s=60)
    assert store.leases.holder("canary:churn") == "a" and store.leases.holder("canary:other") is None
    store.leases.release("canary:churn", "b")  # not b's: left alone
    assert not store.leases.acquire("canary:churn", "b", ttl_s=60)
    store.leases.release("canary:churn", "a")
    assert store.leases.holder("canary:churn") is None
    assert store.leases.acquire("canary:churn", "b", ttl_s=60)  # at once, not after the ttl


def test_long_holders_and_names_fit_their_columns(store: PredictionStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """M4: a 61-character hostname made a holder over 64 characters, a raw DataError on Postgres."""
    monkeypatch.setattr(
        lease_ids.socket, "gethostname", lambda: "shipml-canary-controller-7d9f8b6c5d-x2x4z." + "h" * 18
    )
    holders = {lease_ids.new_holder() for _ in range(20)}
    assert len(holders) == 20 and all(len(h) <= 64 for h in holders)
    name = "canary:" + "m" * 300
    holder = "h" * 100
    assert store.leases.acquire(name, holder, ttl_s=60)
    assert not store.leases.acquire(name, holder[:-1] + "x", ttl_s=60)  # shortened, still told apart
    assert store.leases.acquire(name, holder, ttl_s=60)
    assert store.leases.holder(name) == lease_ids.fitted(holder, 64)
    assert all(store.leases.acquire(h, h, ttl_s=60) for h in holders)


def test_lease_and_canary_faults_are_store_errors(store: PredictionStore) -> None:
    """M4: a database fault in a lease was a raw SQLAlchemy error (a traceback in `deploy canary`)."""
    first = started(store)
    with store.database.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE leases")
        conn.exec_driver_sql("DROP TABLE canary_events")
    with pytest.raises(StoreError, match="store: cannot take the lease 'canary:churn'"):
        store.leases.acquire("canary:churn", "a", ttl_s=60)
    with pytest.raises(StoreError, match="store: cannot read the canary events of 'churn'"):
        store.canaries.events("churn")
    with pytest.raises(StoreError, match="store: cannot save the canary of 'churn'"):
        store.canaries.save(replace(first, reason="x"), CanaryEvent.of("held", first), expect=first.updated_at)
    assert store.canaries.read("churn") == first  # the failed write left nothing behind
