"""Issue 18, item 2: the prediction store on Postgres with several writers. 3 `shipml serve --workers 2` replicas on
one Postgres store take 30,000 keyed predictions at once (single /predict and /predict/batch of 100, each with a
routing key): every id answered 200 is stored exactly once and every stored id was answered (both ways), ids
answered 503 yet stored are printed as in doubt, and the drift histograms summed over the six writers equal the
stored rows per minute. Item 3's pool bound is here too: 3 replicas x 4 workers under load stay within their
``store.pool_size`` + ``store.pool_max_overflow`` each, inside Postgres's default ``max_connections`` of 100."""

from __future__ import annotations

import collections
import re
import shlex
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from shipml.adapters.store import PredictionStore
from shipml.config import StoreSettings
from tests.scale.store_fleet import (
    KeyedLoad,
    answered_ids,
    batch,
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
from tests.support.server import Keys

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SINGLES = 10_000  # keyed /predict requests, one prediction each
BATCHES = 200  # keyed /predict/batch requests of 100: 20,000 predictions
TOTAL = SINGLES + 100 * BATCHES
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def project(store_project: tuple[Path, Keys]) -> tuple[Path, Keys]:
    return store_project


@pytest.fixture(scope="module")
def server(store_postgres: PostgresServer) -> PostgresServer:
    return store_postgres


def test_30000_keyed_predictions_from_6_writers_are_stored_exactly_once(
    project: tuple[Path, Keys], server: PostgresServer
) -> None:
    root, keys = project
    uri = fresh_postgres_database(server.uri)
    fleet = start_fleet(root, replicas=3, workers=2, env=store_env(uri))
    started = time.monotonic()
    try:
        singles = KeyedLoad(fleet, keys.predict, single, threads=2, max_requests=SINGLES).start()
        batches = KeyedLoad(fleet, keys.predict, batch, threads=1, max_requests=BATCHES).start()
        sent = singles.wait() + batches.wait()
        seconds = time.monotonic() - started
    finally:
        stop_fleet(fleet)  # the writers commit what is queued and flush their histograms' open minutes
    assert sum(s.asked for s in sent) == TOTAL

    answered = answered_ids(sent)
    refused = [pid for s in sent if s.status != 200 for pid in s.ids]  # a 503's ids, if its body named any
    stored, stored_ts = stored_ids(uri)
    stored_set = set(stored)
    duplicated = len(stored) - len(stored_set)
    in_doubt = sorted(stored_set - set(answered))  # stored, yet never answered 200 (a 503 whose commit went on)
    figure(
        "store writers",
        replicas=3, workers=2, answered=len(answered), stored=len(stored), in_doubt=len(in_doubt),
        duplicated=duplicated, statuses=statuses(sent), seconds=round(seconds, 1),
        predictions_per_s=round(TOTAL / seconds),
    )  # fmt: skip
    assert duplicated == 0
    assert len(answered) == len(set(answered)), "an id was answered twice"
    missing = set(answered) - stored_set
    assert not missing, f"{len(missing)} ids answered 200 are not stored, e.g. {sorted(missing)[:3]}"
    assert not (stored_set - set(answered) - set(refused) - set(in_doubt))
    assert all(s.status in (200, 503) for s in sent), statuses(sent)

    # The histograms of the six writers, summed, count every stored row in its minute.
    per_minute = collections.Counter(int(ts // 60) for ts in stored_ts)
    store = PredictionStore(uri)
    try:
        histograms = store.histograms.read("churn", 0.0, time.time() + 3600)
        with store.database.engine.connect() as conn:
            writers = conn.execute(sa.text("SELECT count(DISTINCT writer) FROM feature_histograms")).scalar_one()
    finally:
        store.close()
    counted = collections.Counter()
    for minute in histograms:
        counted[minute.minute] += minute.rows
    figure("store writers histograms", minutes=len(per_minute), writers=writers, rows=sum(counted.values()))
    assert dict(counted) == dict(per_minute)


def readme_replicas() -> tuple[str, list[str], str]:
    """The README's "Many replicas on one Postgres store": its variable, its `shipml serve` arguments, its text."""
    section = (REPO / "README.md").read_text().split("### Many replicas on one Postgres store", 1)[1].split("\n## ")[0]
    section = section.split("\n### ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block is not None, "README.md: no bash block under '### Many replicas on one Postgres store'"
    export, serve = [line.split("#", 1)[0].strip() for line in block.group(1).splitlines() if line.strip()]
    name = shlex.split(export.removeprefix("export "))[0].partition("=")[0]
    args = shlex.split(serve)
    assert args[:2] == ["shipml", "serve"], serve
    return name, args[2:], " ".join(section.split())


def test_3_replicas_of_4_workers_stay_within_their_pools_under_load(
    project: tuple[Path, Keys], server: PostgresServer
) -> None:
    """The README's pool arithmetic, run as it says: 3 replicas of its `shipml serve --workers 4` with the default
    pool settings, under load, hold at most 3 x 4 x (pool_size + pool_max_overflow) connections, inside 100."""
    root, keys = project
    name, serve_args, text = readme_replicas()
    defaults = StoreSettings()
    per_worker = defaults.pool_size + defaults.pool_max_overflow
    bound = 3 * 4 * per_worker
    assert serve_args == ["--workers", "4"]
    assert f"({defaults.pool_size} + {defaults.pool_max_overflow})" in text and f"x {per_worker}" in text
    assert f"= {bound}" in text and "default of 100" in text
    uri = fresh_postgres_database(server.uri)
    fleet = start_fleet(root, replicas=3, workers=4, env={name: uri}, args=serve_args)
    database = uri.rsplit("/", 1)[1]
    engine = sa.create_engine(server.uri, poolclass=sa.pool.NullPool)
    peak = 0
    sampling = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not sampling.wait(0.2):
            with engine.connect() as conn:
                n = conn.execute(
                    sa.text("SELECT count(*) FROM pg_stat_activity WHERE datname = :d"), {"d": database}
                ).scalar_one()
            peak = max(peak, int(n))

    sampler = threading.Thread(target=sample)
    try:
        with engine.connect() as conn:
            max_connections = int(conn.execute(sa.text("SHOW max_connections")).scalar_one())
        sampler.start()
        singles = KeyedLoad(fleet, keys.predict, single, threads=4, max_requests=2000).start()
        batches = KeyedLoad(fleet, keys.predict, batch, threads=1, max_requests=30).start()
        sent = singles.wait() + batches.wait()
    finally:
        sampling.set()
        if sampler.is_alive():
            sampler.join()
        stop_fleet(fleet)
        engine.dispose()
    figure(
        "store pool", replicas=3, workers=4, peak_connections=peak, bound=bound, max_connections=max_connections,
        statuses=statuses(sent),
    )  # fmt: skip
    assert max_connections == 100
    assert 0 < peak <= bound < max_connections
    assert all(s.status in (200, 503) for s in sent), statuses(sent)  # never a 500; a refused connection is a 503
