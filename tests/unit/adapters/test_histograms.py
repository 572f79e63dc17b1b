"""Per-minute histograms kept by the store writer equal the counts of the rows it committed, on every dialect."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from shipml.adapters.store import PredictionStore, StoreWriter, tables
from shipml.adapters.store.histogram_table import Recount
from shipml.adapters.store.histograms import HistogramLayout
from shipml.config import MonitorSettings
from shipml.core.binning import PREDICTION, ProfileBinnings, counts_of
from shipml.core.drift import Verdict
from shipml.core.ids import Uuid7Generator
from shipml.core.monitor_report import DriftReport, SegmentReport
from shipml.core.prediction import Prediction
from shipml.core.profile import ReferenceProfile, build_profile
from shipml.core.window import Window
from shipml.errors import StoredReportUnreadable, StoreError
from shipml.pipelines.monitor import MonitorJob, Version
from tests.support.dialects import DIALECTS, store_uri_for
from tests.support.logged import batch_of, logged
from tests.unit.adapters.test_prediction_store import CHURNISH

IDS = Uuid7Generator()
MINUTE = 29_000_000  # a fixed minute (Unix time // 60), far from now


def profile() -> ReferenceProfile:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {"tenure": rng.normal(30, 10, 2000), "contract": rng.choice(["monthly", "one-year", "two-year"], 2000)}
    )
    return build_profile(frame, CHURNISH, rng.uniform(0, 1, 2000))


@pytest.fixture(params=DIALECTS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PredictionStore]:
    s = PredictionStore(store_uri_for(request, str(request.param), tmp_path), histogram_flush_s=3600)
    s.predictions.register_schema(CHURNISH)
    s.histograms.register_profile("churn", "1", profile(), "binary", "1")
    yield s
    s.close()


def features(i: int, shift: float = 0.0) -> dict[str, Any]:
    contract = ["monthly", "one-year", "two-year", "lifetime", None][i % 5]  # "lifetime" was never seen
    return {"tenure": None if i % 11 == 0 else float(i % 60) + shift, "contract": contract}


def rows(n: int, ts: float, version: str = "1", shift: float = 0.0) -> list[Prediction]:
    return [
        logged(
            prediction_id, ts, "churn", version, "main", features(i, shift),
            {"predicted_class": "1", "probabilities": {"0": 1 - i / n, "1": i / n}}, 1.0,
            schema_sha256=CHURNISH.sha256(),
        )
        for i, prediction_id in enumerate(IDS.strings(n))
    ]  # fmt: skip


def batch(n: int, ts: float) -> list[Prediction]:
    probas = [[1 - i / n, i / n] for i in range(n)]
    return batch_of(
        IDS.strings(n), ts, "churn", "1", "main", CHURNISH.sha256(), [features(i) for i in range(n)], 1.0,
        labels=["1"] * n, classes=["0", "1"], proba=probas,
    )  # fmt: skip


def expected(store: PredictionStore, since: float, until: float) -> dict[str, np.ndarray]:
    """The counts of the committed rows, read back raw and counted on the profile's buckets."""
    window = store.predictions.read_window("churn", since, until, version="1")
    binnings = ProfileBinnings.of(profile()).all
    out = {name: counts_of(b, window.features[name]) for name, b in binnings.items() if name != PREDICTION}
    out[PREDICTION] = counts_of(binnings[PREDICTION], window.score)
    return out


def test_histograms_equal_the_counts_of_the_committed_rows(store: PredictionStore) -> None:
    t0 = MINUTE * 60.0
    writer = StoreWriter(store, queue_size=10_000, batch_max=512)
    writer.enqueue(rows(300, t0 + 5))
    writer.enqueue(batch(700, t0 + 30))
    writer.enqueue(rows(50, t0 + 61))  # the next minute
    writer.enqueue(rows(40, t0 + 10, version="2"))  # a version without a profile: no histogram
    writer.close()  # the last flush
    minutes = store.histograms.read("churn", t0, t0 + 120)
    assert [(m.minute, m.version, m.rows) for m in minutes] == [(MINUTE, "1", 1000), (MINUTE + 1, "1", 50)]
    want = expected(store, t0, t0 + 60)
    for name, counts in want.items():
        np.testing.assert_array_equal(minutes[0].counts[name], counts, err_msg=name)
    # the unseen category and the nulls have buckets of their own
    contract = minutes[0].counts["contract"]
    assert contract[-2] == 200 and contract[-1] == 200
    assert store.histograms.read("churn", t0 + 60, t0 + 120)[0].rows == 50
    assert store.histograms.read("churn", t0, t0 + 120, version="2") == []


def test_workers_write_their_own_rows_and_readers_sum_them(store: PredictionStore) -> None:
    t0 = MINUTE * 60.0
    other = PredictionStore(store.uri, histogram_flush_s=3600)  # a second worker process's store
    other.predictions.register_schema(CHURNISH)
    other.histograms.register_profile("churn", "1", profile(), "binary", "1")
    for s, n in ((store, 120), (other, 80), (store, 30)):  # the first store flushes twice: replaced, not added
        w = StoreWriter(s, queue_size=1000, batch_max=512)
        w.enqueue(rows(n, t0 + 1))
        w.close()
    other.close()
    (minute,) = store.histograms.read("churn", t0, t0 + 60)
    assert minute.rows == 230
    np.testing.assert_array_equal(minute.counts["tenure"], expected(store, t0, t0 + 60)["tenure"])


def test_recompute_replaces_the_window(store: PredictionStore) -> None:
    t0 = MINUTE * 60.0
    w = StoreWriter(store, queue_size=1000, batch_max=512)
    w.enqueue(rows(100, t0 + 1))
    w.close()
    layout = store.histograms.keeper.layout("churn", "1")
    assert layout is not None
    flat = np.concatenate([c for c in expected(store, t0, t0 + 60).values()])
    store.histograms.replace("churn", t0, t0 + 60, [Recount(MINUTE, "1", "main", "primary", layout, 100, flat * 2)])
    (minute,) = store.histograms.read("churn", t0, t0 + 60)
    assert minute.rows == 100 and minute.counts["tenure"].sum() == 200


def test_a_row_committed_after_its_minute_was_forgotten_adds_to_it(store: PredictionStore) -> None:
    """S14: a minute is kept in memory 2 minutes after it closes; a row of it committed later (a stalled writer)
    is counted in a row of its own that adds to the stored counts, instead of replacing them."""
    t0 = MINUTE * 60.0
    keeper = store.histograms.keeper
    keeper.clock = lambda: t0 + 30  # the minute is the current one
    writer = StoreWriter(store, queue_size=10_000, batch_max=512)
    writer.enqueue(rows(1000, t0 + 5))
    writer.flush()
    store.histograms.flush(force=True)
    keeper.clock = lambda: t0 + 5 * 60  # 4 minutes after it closed: the next flush forgets it
    store.histograms.flush(force=True)
    for late in (3, 2):  # two late arrivals, each its own flush
        writer.enqueue(rows(late, t0 + 50))
        writer.flush()
        store.histograms.flush(force=True)
    writer.close()
    (minute,) = store.histograms.read("churn", t0, t0 + 60)
    assert minute.rows == 1005  # before: 5, the late rows replaced the 1,000
    for name, counts in expected(store, t0, t0 + 60).items():
        np.testing.assert_array_equal(minute.counts[name], counts, err_msg=name)


def test_two_workers_writing_out_of_order_across_minutes_with_late_rows_sum_exactly(store: PredictionStore) -> None:
    """The review's merge check, with the clock moving: 6,000 rows over 6 minutes, written out of order by two
    workers with interleaved flushes, many of them after their minute was forgotten (late segments). Every
    minute reads back equal to the counts of its committed rows."""
    t0 = MINUTE * 60.0
    other = PredictionStore(store.uri, histogram_flush_s=3600)  # a second worker process's store
    other.predictions.register_schema(CHURNISH)
    other.histograms.register_profile("churn", "1", profile(), "binary", "1")
    writers = [StoreWriter(s, queue_size=10_000, batch_max=512) for s in (store, other)]
    rng = np.random.default_rng(11)
    for step in range(60):
        # the clock crosses the 6 minutes and 4 more, rows landing behind it; every third step it runs 4 minutes
        # ahead, then steps back
        now = t0 + 6 * step + 4 * 60 * (step % 3 == 2)
        for s in (store, other):
            s.histograms.keeper.clock = lambda now=now: now
        w = int(rng.integers(2))
        writers[w].enqueue(rows(100, t0 + float(rng.uniform(0, 360))))
        writers[w].flush()
        if rng.random() < 0.5:
            (store, other)[int(rng.integers(2))].histograms.flush(force=True)
    for w in writers:
        w.close()
    other.close()
    read = {m.minute: m for m in store.histograms.read("churn", t0, t0 + 360)}
    assert sum(m.rows for m in read.values()) == 6000
    for minute, m in read.items():
        since = minute * 60.0
        for name, counts in expected(store, since, since + 60).items():
            np.testing.assert_array_equal(m.counts[name], counts, err_msg=f"{minute} {name}")


def test_a_recompute_during_traffic_counts_nothing_twice(store: PredictionStore) -> None:
    """S15: a recount of the minute live keepers still hold is not written (their next flush would write over
    it with counts it already holds); once the minute is settled, the recount replaces it and later rows add."""
    t0 = MINUTE * 60.0
    keeper = store.histograms.keeper
    keeper.clock = lambda: t0 + 30
    layout = keeper.layout("churn", "1")
    assert layout is not None
    writer = StoreWriter(store, queue_size=10_000, batch_max=512)

    def recompute() -> float:
        want = expected(store, t0, t0 + 60)
        total = int(want["tenure"].sum())
        flat = np.concatenate(list(want.values()))
        return store.histograms.replace(
            "churn", t0, t0 + 60, [Recount(MINUTE, "1", "main", "primary", layout, total, flat)]
        )

    writer.enqueue(rows(1000, t0 + 5))
    writer.flush()
    store.histograms.flush(force=True)
    assert recompute() == t0  # nothing settled yet: nothing replaced
    writer.enqueue(rows(10, t0 + 40))
    writer.flush()
    store.histograms.flush(force=True)
    assert store.histograms.read("churn", t0, t0 + 60)[0].rows == 1010  # before: 2,010
    keeper.clock = lambda: t0 + 3 * 3600  # past two flush periods (an hour each here) and the minutes kept
    store.histograms.flush(force=True)  # the keeper forgets the closed minute
    assert store.histograms.settled_before() > t0
    assert recompute() == t0 + 60  # settled: rebuilt from the rows
    writer.enqueue(rows(1, t0 + 59))  # later still: adds to the recount
    writer.close()
    (minute,) = store.histograms.read("churn", t0, t0 + 60)
    assert minute.rows == 1011
    for name, counts in expected(store, t0, t0 + 60).items():
        np.testing.assert_array_equal(minute.counts[name], counts, err_msg=name)


def test_a_report_right_after_traffic_judges_every_committed_row(store: PredictionStore) -> None:
    """The lag: 3,000 clean rows written to the histograms, then 3,000 shifted rows committed but not yet flushed
    by the writer. The drift section of a report run now counts all 6,000, as its performance section does."""
    now = time.time()
    profiled = profile()
    bundle = SimpleNamespace(
        schema=SimpleNamespace(target=SimpleNamespace(task="binary")), classes=("0", "1"), evaluation={}
    )
    version = Version(
        bundle,  # type: ignore[arg-type]
        ProfileBinnings.of(profiled),
        HistogramLayout.of(profiled, "binary", "1"),
        "1",
    )
    job = MonitorJob(MonitorSettings(multivariate=False), store, None, Path("unused"))  # type: ignore[arg-type]
    job._versions[("churn", "1")] = version
    writer = StoreWriter(store, queue_size=10_000, batch_max=512)
    writer.enqueue(rows(3000, now - 20))
    writer.flush()
    store.histograms.flush(force=True)
    writer.enqueue(rows(3000, now - 10, shift=100.0))
    writer.flush()  # committed; the histograms' next flush is an hour away

    report, _ = job.run("churn", Window(now - 600, now + 1), save=False)

    (segment,) = report.segments
    assert segment.rows == 6000  # before: 3,000
    tenure = next(d for d in segment.distributions if d.feature == "tenure")
    assert sum(tenure.current) == 6000
    assert any(d.feature == "tenure" and d.verdict == "drift" for d in segment.drift)
    writer.close()


def test_a_lease_has_one_holder_until_it_expires(store: PredictionStore) -> None:
    assert store.leases.acquire("monitor:churn", "worker-a", ttl_s=0.5)
    assert not store.leases.acquire("monitor:churn", "worker-b", ttl_s=0.5)
    assert store.leases.acquire("monitor:churn", "worker-a", ttl_s=0.5)  # renewed by its holder
    assert store.leases.acquire("monitor:other", "worker-b", ttl_s=0.5)  # another job, another lease
    time.sleep(0.6)
    assert store.leases.acquire("monitor:churn", "worker-b", ttl_s=0.5)  # expired: taken over
    assert not store.leases.acquire("monitor:churn", "worker-a", ttl_s=0.5)


def drift_report(model: str, since: float, verdict: Verdict) -> DriftReport:
    return DriftReport(model, since, since + 60.0, 1e9 + since, (SegmentReport("1", "main", 10, verdict, ()),))


def test_reports_are_kept_and_the_newest_is_read_back_as_reports(store: PredictionStore) -> None:
    first = store.reports.save(drift_report("churn", 0.0, "no_drift"))
    second = store.reports.save(drift_report("churn", 60.0, "drift"))
    store.reports.save(drift_report("other", 0.0, "warn"))
    assert second > first
    assert store.reports.latest("churn") == drift_report("churn", 60.0, "drift")
    assert store.reports.latest("nobody") is None
    assert [(r.model, r.verdict) for r in store.reports.latest_per_model()] == [("churn", "drift"), ("other", "warn")]
    assert [r.since for r in store.reports.recent("churn", limit=5)] == [60.0, 0.0]


def test_a_stored_report_that_cannot_be_read_is_a_store_error_naming_it(store: PredictionStore) -> None:
    with store.database.engine.begin() as conn:
        conn.execute(sa.insert(tables.drift_reports).values(
            model="churn", created_at=1.0, since=0.0, until=60.0, verdict="drift", report="{not json"
        ))  # fmt: skip
    with pytest.raises(StoredReportUnreadable, match=r"store: the monitoring report \d+ of 'churn' cannot be read"):
        store.reports.latest("churn")


def in_memory_recount(store: PredictionStore, job: MonitorJob, since: float, until: float) -> list[Recount]:
    """The recount as it was before it streamed: the whole window read at once, then a mask per minute."""
    window = store.predictions.read_window("churn", since, until)
    minute_of = (window.ts // 60).astype(np.int64)
    out = []
    for version in sorted(set(window.version.tolist())):
        v = job.version("churn", version)
        if v.layout is None:
            continue
        for variant in sorted(set(window.variant[window.version == version].tolist())):
            segment = (window.version == version) & (window.variant == variant)
            for minute in np.unique(minute_of[segment]).tolist():
                picked = np.flatnonzero(segment & (minute_of == minute))
                flat = np.concatenate([
                    counts_of(b, job._values_of(v, window, b.feature, picked)) for b in v.layout.binnings
                ])  # fmt: skip
                out.append(Recount(minute, version, variant, "primary", v.layout, len(picked), flat))
    return out


def test_a_streamed_recompute_counts_exactly_what_the_whole_window_counts(store: PredictionStore) -> None:
    """--recompute reads the window a chunk at a time (here 100 rows: dozens of chunks, batches of 700 rows
    among them) and adds the chunks' counts: every minute's counts equal those of the whole window read at once,
    bit for bit, and so does the report judged on them."""
    t0 = MINUTE * 60.0
    settings = MonitorSettings(multivariate=False, recompute_chunk_rows=100)
    job = MonitorJob(settings, store, None, Path("unused"))  # type: ignore[arg-type]
    profiled = profile()
    bundle = SimpleNamespace(
        schema=SimpleNamespace(target=SimpleNamespace(task="binary")), classes=("0", "1"), evaluation={}
    )
    job._versions[("churn", "1")] = Version(
        bundle,  # type: ignore[arg-type]
        ProfileBinnings.of(profiled),
        HistogramLayout.of(profiled, "binary", "1"),
        "1",
    )
    job._versions[("churn", "2")] = Version(bundle, None, None, "1")  # type: ignore[arg-type]
    writer = StoreWriter(store, queue_size=10_000, batch_max=512)
    for minute in range(6):
        writer.enqueue(rows(230 + minute, t0 + 60 * minute + 7, shift=10.0 * minute))
        writer.enqueue(batch(700, t0 + 60 * minute + 31))
        writer.enqueue(rows(40, t0 + 60 * minute + 50, version="2"))  # no profile: no histogram
    writer.close()

    whole = in_memory_recount(store, job, t0, t0 + 360)
    streamed = job._recount("churn", t0, t0 + 360)

    assert [(r.minute, r.version, r.variant, r.rows) for r in streamed] == [
        (r.minute, r.version, r.variant, r.rows) for r in whole
    ]
    assert [r.rows for r in streamed] == [230 + m + 700 for m in range(6)]
    for got, want in zip(streamed, whole, strict=True):
        assert got.counts.dtype == want.counts.dtype and got.counts.tobytes() == want.counts.tobytes()
    chunks = store.predictions.stream_window("churn", t0, t0 + 360, rows_per_chunk=100)
    assert len(next(chunks)) == 100
    chunks.close()  # left early (its next fetch may be under way): the connection is let go, nothing hangs
    assert job.recompute("churn", Window(t0, t0 + 360)) == sum(r.rows for r in whole)
    report, _ = job.run("churn", Window(t0, t0 + 360), save=False)
    job.settings = MonitorSettings(multivariate=False, recompute_chunk_rows=10**6)  # one chunk: the whole window
    once, _ = job.run("churn", Window(t0, t0 + 360), recompute=True, save=False)
    assert report.segments == once.segments and report.segments[0].verdict == "drift"


def test_a_streamed_read_that_fails_is_a_store_error(store: PredictionStore) -> None:
    """The streamed read goes through the driver's own cursor: a failure there is a StoreError naming the read,
    as every other read's is, not the driver's exception."""
    writer = StoreWriter(store, queue_size=1000, batch_max=512)
    writer.enqueue(rows(10, MINUTE * 60.0 + 1))
    writer.close()
    with store.database.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE predictions RENAME TO predictions_elsewhere")
    chunks = store.predictions.stream_window("churn", MINUTE * 60.0, MINUTE * 60.0 + 60)
    with pytest.raises(StoreError, match=r"^store: cannot read predictions of 'churn': .*predictions"):
        next(chunks)
