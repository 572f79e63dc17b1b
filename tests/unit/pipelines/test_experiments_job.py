"""The experiment report job on a real SQLite prediction store: verdicts, counts, units, guardrails (error rate,
p99 latency, and drift and performance from a stored monitoring report), the shadow join, label delay, JSON, and the
refusals of `ab promote` (the registry is a stand-in that only resolves)."""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from shipml.adapters.registry import ModelRef
from shipml.adapters.store import PredictionStore
from shipml.config import Settings, settings_from_mapping
from shipml.core.binning import PREDICTION
from shipml.core.drift import FeatureDrift, Verdict
from shipml.core.experiment_report import ExperimentReport
from shipml.core.ids import Uuid7Generator
from shipml.core.monitor_report import DriftReport, PerformanceEntry, SegmentReport
from shipml.core.performance import PerformanceEstimate
from shipml.core.window import Window
from shipml.errors import ConfigError, PromotionRefused
from shipml.pipelines.experiments import ExperimentJob
from tests.support.logged import batch_of, label_all, logged
from tests.unit.adapters.test_prediction_store import CHURNISH

_ids = itertools.count()


class Registry:
    """Resolves ``churn/N`` to N and an alias to 7; nothing else is needed before a promotion is refused."""

    def resolve(self, ref: ModelRef) -> Any:
        return SimpleNamespace(name=ref.name, version=ref.version or "7")


def settings(
    variants: Sequence[tuple[str, float]] = (("champion", 0.5), ("challenger", 0.5)), **extra: Any
) -> Settings:
    serve: dict[str, Any] = {
        "variants": [{"name": n, "model": f"churn/{i + 1}", "weight": w} for i, (n, w) in enumerate(variants)]
    }
    serve.update(extra.pop("serve", {}))
    return settings_from_mapping({"serve": serve, **extra})


@pytest.fixture
def store(tmp_path: Path) -> Iterator[PredictionStore]:
    # thousands of feedback rows, one commit each: no WAL sync per commit (the job's verdicts are under test here)
    s = PredictionStore(f"sqlite:///{tmp_path}/p.db", sqlite_synchronous="NORMAL")
    yield s
    s.close()


def log(
    store: PredictionStore,
    variant: str,
    pairs: Sequence[tuple[Any, Any]],
    *,
    keys: Sequence[str | None] | None = None,
    role: str = "primary",
    age_s: float = 120.0,
    status: str = "ok",
    latency_ms: float | Sequence[float] = 1.0,
) -> list[str]:
    """Rows of ``variant``: (predicted, true) per row, feedback recorded for each true that is not None. A
    float prediction makes a regression row. ``latency_ms``: one for every row, or one per row."""
    now = time.time()
    rows, ids = [], []
    for i, (predicted, _) in enumerate(pairs):
        pid = f"p{next(_ids):06d}"
        ids.append(pid)
        outputs = (
            {"value": predicted}
            if isinstance(predicted, float)
            else {"predicted_class": predicted, "probabilities": {"0": 0.5, "1": 0.5}}
        )
        key = keys[i] if keys is not None else None
        latency = float(latency_ms) if isinstance(latency_ms, float | int) else float(latency_ms[i])
        rows.append(
            logged(pid, now - age_s + i * 1e-3, "churn", "1", variant, {}, outputs, latency, role, key, status=status)
        )
    store.predictions.write([rows])
    label_all(
        store,
        (
            (pid, None, truth) if isinstance(truth, float) else (pid, str(truth), None)
            for pid, (_, truth) in zip(ids, pairs, strict=True)
            if truth is not None
        ),
    )
    return ids


def labelled(n: int, accuracy: float) -> list[tuple[str, str]]:
    right = round(n * accuracy)
    return [("1", "1")] * right + [("1", "0")] * (n - right)


def report(store: PredictionStore, s: Settings | None = None) -> ExperimentReport:
    now = time.time()
    return ExperimentJob(s or settings(), store, Registry()).report("churn", Window(now - 3600, now + 1))  # type: ignore[arg-type]


def test_a_worse_challenger_is_rolled_back_and_its_numbers_are_exact(store: PredictionStore) -> None:
    log(store, "champion", labelled(400, 0.9))
    log(store, "challenger", labelled(400, 0.6))
    r = report(store)
    assert (r.verdict, r.winner, r.metric, r.kind) == ("rollback", None, "accuracy", "proportion")
    champion, challenger = r.variant("champion"), r.variant("challenger")
    assert (champion.requests, champion.labelled) == (400, 400) and champion.metric.mean == pytest.approx(0.9)
    assert challenger.metric.mean == pytest.approx(0.6) and r.challengers[0].primary.worse
    assert r.reasons[0].startswith("accuracy challenger - champion = -0.3")


def test_too_few_labels_continue(store: PredictionStore) -> None:
    log(store, "champion", labelled(50, 0.9))
    log(store, "challenger", labelled(50, 0.5))
    r = report(store)
    assert (r.verdict, r.reasons) == ("continue", ("variant champion has 50 units, under the minimum 100",))


def test_without_feedback_there_is_no_data(store: PredictionStore) -> None:
    log(store, "champion", [("1", None)] * 30)
    log(store, "challenger", [("1", None)] * 30)
    r = report(store)
    assert (r.verdict, r.variant("challenger").requests, r.variant("challenger").labelled) == ("no_data", 30, 0)


def test_a_variant_without_traffic_is_a_sample_ratio_mismatch(store: PredictionStore) -> None:
    log(store, "champion", labelled(200, 0.9))
    r = report(store, settings((("champion", 0.5), ("idle", 0.5))))
    assert (r.verdict, r.srm.observed, r.srm.mismatch) == ("unhealthy", (200, 0), True)


def test_units_are_distinct_keys_plus_unkeyed_requests(store: PredictionStore) -> None:
    log(store, "champion", labelled(6, 1.0), keys=["a", "a", "a", "b", None, None])
    r = report(store)
    champion = r.variant("champion")
    assert (champion.requests, champion.units, champion.keyed) == (6, 4, 4)
    assert r.srm.observed == (4, 0)


def test_an_error_rate_worse_than_its_margin_rolls_back_a_better_challenger(store: PredictionStore) -> None:
    log(store, "champion", labelled(1000, 0.7))
    log(store, "challenger", labelled(900, 0.95))
    log(store, "challenger", [("1", None)] * 100, status="invalid")  # 10 % of its requests refused
    r = report(store)
    challenger = r.variant("challenger")
    assert (challenger.requests, challenger.errors) == (1000, 100)
    guardrail = r.challengers[0].guardrails[0]
    assert (guardrail.name, guardrail.status, r.verdict) == ("error_rate", "violated", "rollback")
    # the same experiment without the errors ships the challenger
    fresh = PredictionStore(store.uri.replace("p.db", "q.db"))
    try:
        log(fresh, "champion", labelled(1000, 0.7))
        log(fresh, "challenger", labelled(1000, 0.95))
        shipped = report(fresh)
        assert (shipped.verdict, shipped.winner, shipped.challengers[0].guardrails[0].status) == (
            "ship",
            "challenger",
            "holds",
        )
        # no monitoring report: drift and performance are not judged, said so, and do not block ship
        assert [g.name for g in shipped.challengers[0].guardrails] == ["error_rate", "latency_p99"]
        assert (
            "guardrails drift and performance of challenger: not judged, no monitoring report of churn covers the "
            "window (`shipml monitor drift` writes one); they do not block ship"
        ) in shipped.notes
    finally:
        fresh.close()


def latencies(n: int, seed: int, scale: float = 1.0) -> list[float]:
    """Skewed, like latencies: lognormal around 20 ms, times ``scale``."""
    return (scale * np.random.default_rng(seed).lognormal(3.0, 0.5, n)).tolist()


def test_a_clearly_slower_challenger_is_rolled_back_on_its_p99_latency(store: PredictionStore) -> None:
    log(store, "champion", labelled(1000, 0.7), latency_ms=latencies(1000, 1))
    log(store, "challenger", labelled(1000, 0.95), latency_ms=latencies(1000, 2, scale=2.0))  # better, but twice slower
    log(store, "champion", [("1", None)] * 4000, latency_ms=latencies(4000, 3))  # requests without feedback count too
    log(store, "challenger", [("1", None)] * 4000, latency_ms=latencies(4000, 4, scale=2.0))
    r = report(store)
    champion, challenger = r.variant("champion"), r.variant("challenger")
    served = np.r_[latencies(1000, 1), latencies(4000, 3)]
    assert champion.p99_ms == pytest.approx(float(np.quantile(served, 0.99)), rel=1e-12)
    assert challenger.p99_ms > 1.5 * champion.p99_ms
    latency = r.challengers[0].guardrails[1]
    assert (latency.name, latency.status, latency.margin) == ("latency_p99", "violated", 0.01)
    assert latency.lower > 0.01  # surely more than 2 % of its requests are over the champion's p99 (about 17 % are)
    assert r.challengers[0].primary.better and (r.verdict, r.winner) == ("rollback", None)
    assert r.reasons == (f"guardrail latency_p99 [{latency.lower:+.4g}, {latency.upper:+.4g}] (margin 0.01) is worse "
                         "than its margin",)  # fmt: skip


def test_an_equally_fast_better_challenger_ships(store: PredictionStore) -> None:
    log(store, "champion", labelled(1000, 0.7), latency_ms=latencies(1000, 5))
    log(store, "challenger", labelled(1000, 0.95), latency_ms=latencies(1000, 6))
    log(store, "champion", [("1", None)] * 14_000, latency_ms=latencies(14_000, 7))
    log(store, "challenger", [("1", None)] * 14_000, latency_ms=latencies(14_000, 8))
    r = report(store)
    latency = r.challengers[0].guardrails[1]
    assert (latency.name, latency.status) == ("latency_p99", "holds")
    assert latency.lower < 0.0 < latency.upper <= 0.01
    assert r.variant("challenger").p99_ms == pytest.approx(r.variant("champion").p99_ms, rel=0.1)
    assert (r.verdict, r.winner) == ("ship", "challenger")
    # too few requests to tell a p99 apart: the same challenger waits
    fresh = PredictionStore(store.uri.replace("p.db", "q.db"))
    try:
        log(fresh, "champion", labelled(1000, 0.7), latency_ms=latencies(1000, 5))
        log(fresh, "challenger", labelled(1000, 0.95), latency_ms=latencies(1000, 6))
        early = report(fresh)
        assert early.challengers[0].guardrails[1].status == "undecided" and early.verdict == "continue"
        assert early.reasons[0].startswith("guardrail latency_p99 [")
        assert early.reasons[0].endswith("(margin 0.01) is not yet within its margin")
    finally:
        fresh.close()


def segment(
    variant: str, version: str, prediction: Verdict, accuracy: tuple[float, bool] | None = None
) -> SegmentReport:
    """A monitoring segment: the verdict of its prediction's drift, and optionally its realised accuracy against a
    holdout of 0.9 (value, dropped)."""
    drift = (FeatureDrift(PREDICTION, "numeric", "psi", 0.3 if prediction == "drift" else 0.01, 0.1, 0.2, 1000,
                          prediction),)  # fmt: skip
    performance = ()
    if accuracy is not None:
        value, dropped = accuracy
        estimate = PerformanceEstimate("accuracy", value, value - 0.02, value + 0.02, 1000, "realised")
        performance = (PerformanceEntry(estimate, 0.9, dropped, "judged"),)
    return SegmentReport(version, variant, 1000, prediction, drift, performance=performance)


def monitored(store: PredictionStore, *segments: SegmentReport, since: float | None = None) -> ExperimentReport:
    """The report of a better challenger (no errors, same latency) after the monitoring job stored ``segments``."""
    now = time.time()
    since = now - 1800 if since is None else since
    stored = DriftReport("churn", since, since + 1800, now, segments)
    store.reports.save(stored)
    for variant, accuracy in (("champion", 0.7), ("challenger", 0.95)):
        log(store, variant, labelled(300, accuracy))
        log(store, variant, [("1", None)] * 1000)  # enough requests for the latency to hold
    return report(store)


def statuses(r: ExperimentReport) -> dict[str, str]:
    return {g.name: g.status for g in r.challengers[0].guardrails}


def test_the_challengers_own_prediction_drift_rolls_it_back(store: PredictionStore) -> None:
    r = monitored(store, segment("champion", "1", "no_drift"), segment("challenger", "2", "drift"))
    assert statuses(r) == {"error_rate": "holds", "latency_p99": "holds", "drift": "violated"}  # no performance judged
    assert r.verdict == "rollback" and r.reasons[0].startswith("guardrail drift [+1, +1]")
    assert ("guardrail drift of challenger: its predictions drifted from its reference and champion's did not"
            in r.notes)  # fmt: skip


def test_a_drift_both_variants_show_is_the_traffics_not_the_challengers(store: PredictionStore) -> None:
    r = monitored(store, segment("champion", "1", "drift"), segment("challenger", "2", "drift"))
    assert statuses(r)["drift"] == "holds" and (r.verdict, r.winner) == ("ship", "challenger")
    assert ("guardrail drift of challenger: its predictions drifted, and so did champion's: the traffic moved, not "
            "the challenger") in r.notes  # fmt: skip


def test_a_performance_drop_only_the_challenger_shows_rolls_it_back(store: PredictionStore) -> None:
    r = monitored(
        store, segment("champion", "1", "no_drift", (0.91, False)), segment("challenger", "2", "warn", (0.8, True))
    )
    assert statuses(r) == {"error_rate": "holds", "latency_p99": "holds", "drift": "holds", "performance": "violated"}
    assert r.verdict == "rollback"
    assert ("guardrail performance of challenger: realised accuracy dropped below its holdout value and champion's "
            "did not") in r.notes  # fmt: skip
    # the same drop in both: the world changed; the challenger's better accuracy ships it
    fresh = PredictionStore(store.uri.replace("p.db", "q.db"))
    try:
        both = monitored(
            fresh,
            segment("champion", "1", "no_drift", (0.8, True)),
            segment("challenger", "2", "no_drift", (0.8, True)),
        )
        assert statuses(both)["performance"] == "holds" and both.verdict == "ship"
    finally:
        fresh.close()


def test_monitoring_that_did_not_judge_or_does_not_cover_blocks_nothing(store: PredictionStore) -> None:
    # the challenger's predictions not judged (too few rows), no metric with a holdout: both left out
    r = monitored(store, segment("champion", "1", "no_drift"), segment("challenger", "2", "not_enough_data"))
    assert list(statuses(r)) == ["error_rate", "latency_p99"] and r.verdict == "ship"
    assert ("guardrail drift of challenger: not judged, monitoring did not judge its predictions' drift; it does not "
            "block ship") in r.notes  # fmt: skip
    # a report without the challenger's version, and one older than the window, cover nothing
    for name, segments, since, note in [
        ("q", (segment("champion", "1", "no_drift"), segment("challenger", "1", "drift")), None,
         "the newest monitoring report of churn has no segment for version 2 of challenger"),
        ("r", (segment("champion", "1", "no_drift"), segment("challenger", "2", "drift")), time.time() - 7 * 86400,
         "no monitoring report of churn covers the window"),
    ]:  # fmt: skip
        fresh = PredictionStore(store.uri.replace("p.db", f"{name}.db"))
        try:
            other = monitored(fresh, *segments, since=since)
            assert list(statuses(other)) == ["error_rate", "latency_p99"] and other.verdict == "ship"
            assert any(note in n and n.endswith("they do not block ship") for n in other.notes), other.notes
        finally:
            fresh.close()


def test_a_regressor_is_judged_by_its_negative_absolute_error(store: PredictionStore) -> None:
    log(store, "champion", [(10.0, 12.0), (5.0, 4.0)])
    log(store, "challenger", [(3.0, 3.5)])
    r = report(store)
    assert (r.metric, r.kind) == ("negative_absolute_error", "mean")
    assert r.variant("champion").metric.mean == pytest.approx(-1.5)
    assert r.variant("challenger").metric.mean == pytest.approx(-0.5)


def test_predictions_younger_than_the_label_delay_are_not_matured(store: PredictionStore) -> None:
    log(store, "champion", labelled(10, 1.0), age_s=600)
    log(store, "champion", labelled(5, 1.0), age_s=10)
    champion = report(store, settings(monitor={"label_delay_s": 60})).variant("champion")
    assert (champion.requests, champion.matured, champion.labelled) == (15, 10, 10)


def test_a_shadow_is_joined_to_the_feedback_of_the_request_it_copied(store: PredictionStore) -> None:
    s = settings(serve={"shadow": [{"name": "candidate", "model": "churn/3", "fraction": 1.0}]})
    log(store, "champion", [("1", "1"), ("0", "0")], keys=["a", "b"], age_s=300)
    log(store, "challenger", [("1", "0")], keys=["c"], age_s=300)
    log(store, "champion", [("1", "0")], keys=["a"], age_s=100)  # key a again, later, with another truth
    # copies: a (first request: right), b (wrong), c (right), a (second request: right), and one without a key
    log(store, "candidate", [("1", None), ("1", None), ("0", None)], keys=["a", "b", "c"], role="shadow", age_s=299)
    log(store, "candidate", [("0", None), ("0", None)], keys=["a", None], role="shadow", age_s=99)
    r = report(store, s)
    candidate = r.variant("candidate")
    (shadow,) = r.shadows
    assert (candidate.role, candidate.requests, candidate.labelled, shadow.joined) == ("shadow", 5, 4, 4)
    assert candidate.metric.mean == pytest.approx(3 / 4)
    # the champion answered a, b and a: the shadow said the same for the first a only
    assert shadow.compared == 3 and shadow.agreement == pytest.approx(1 / 3)
    assert shadow.comparison.control.name == "champion"


def test_the_report_survives_json(store: PredictionStore) -> None:
    log(store, "champion", labelled(200, 0.8), keys=[f"k{i}" for i in range(200)])
    log(store, "challenger", labelled(200, 0.7))
    r = report(store)
    text = r.to_json()
    again = ExperimentReport.from_json(text)
    assert again.to_json() == text and again.challengers[0].primary.control.n == 200
    # 200 requests without an error do not yet show the error rate within 0.01 (Agresti-Caffo variance)
    assert json.loads(text)["challengers"][0]["guardrails"][0]["status"] == "undecided"
    assert again.challengers[0].guardrails[0].status == "undecided"
    assert again.variant("champion").p99_ms == 1.0
    # a report stored before the p99 was kept still loads, without one
    old = json.loads(text)
    for v in old["variants"]:
        del v["p99_ms"]
    assert math.isnan(ExperimentReport.from_json(json.dumps(old)).variant("champion").p99_ms)


def test_what_the_job_refuses(store: PredictionStore) -> None:
    with pytest.raises(ConfigError, match=r"serve.variants: `shipml ab` judges an experiment, and the config has none"):
        ExperimentJob(settings_from_mapping({"serve": {"model": "churn@production"}}), store, Registry())  # type: ignore[arg-type]
    job = ExperimentJob(settings(), store, Registry())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"--model: no variant of the experiment serves 'churn2' \(it serves churn\)"):
        job.report("churn2", Window(0, 1))
    log(store, "champion", labelled(50, 0.9))
    log(store, "challenger", labelled(50, 0.5))
    r = report(store)
    with pytest.raises(PromotionRefused, match="the experiment's verdict is continue, not ship") as refused:
        job.promote(r)
    assert refused.value.exit_code == 1
    with pytest.raises(PromotionRefused, match="challenger is not the experiment's winner"):
        job.promote(r, "challenger")
    with pytest.raises(ConfigError, match="--force: give the variant to promote with --variant NAME"):
        job.promote(r, force=True)
    with pytest.raises(ConfigError, match=r"--variant: 'nope' is not a variant of the experiment"):
        job.promote(r, "nope", force=True)


def test_the_error_rate_is_shown_within_its_margin_only_once_requests_accrue(store: PredictionStore) -> None:
    """No error in a few requests proves nothing (the plain p(1 - p) variance would be 0 and the interval [0, 0]);
    with no error in thousands the error rate holds; a challenger failing 5 % is a violation."""
    from shipml.core.experiments import rate_guardrail

    def status(failed: int, requests: int) -> str:
        return rate_guardrail((0, requests), (failed, requests), 0.01).status

    assert status(0, 20) == "undecided"
    assert status(0, 5_000) == "holds"
    assert status(250, 5_000) == "violated"


def test_a_request_is_one_latency_however_many_rows_it_answered(tmp_path: Path) -> None:
    """S7: a request's chunk shares one latency (logged as rows, or as one row of columns): the latency guardrail
    counts it once, not once per row (200 rows of one slow batch are one slow request, not 200)."""
    store = PredictionStore(f"sqlite:///{tmp_path}/b.db")
    store.predictions.register_schema(CHURNISH)
    ids = Uuid7Generator()
    now = time.time() - 60
    singles = [logged(pid, now + i, "churn", "1", "champion", {}, {"value": 1.0}, 5.0 + i)
               for i, pid in enumerate(ids.strings(3))]  # fmt: skip
    small = [logged(i, now + 10, "churn", "1", "champion", {}, {"value": 1.0}, 40.0) for i in ids.strings(20)]
    big = batch_of(ids.strings(200), now + 20, "churn", "1", "champion", CHURNISH.sha256(),
                   [{"tenure": 1.0, "contract": "monthly"}] * 200, 90.0, values=[1.0] * 200)  # fmt: skip
    store.predictions.write([[p] for p in singles] + [small, big])
    got = store.predictions.read_latencies("churn", now - 1, now + 60, variant="champion")
    assert sorted(got.tolist()) == [5.0, 6.0, 7.0, 40.0, 90.0]
    store.close()


def test_a_key_scored_many_times_is_one_unit_of_the_primary_metric(store: PredictionStore) -> None:
    """S2: a challenger whose 300 extra right answers all come from one customer re-scored is not "better": that
    customer is one unit of 101, and the report says continue; counted per prediction it was significantly better."""
    from shipml.core.experiments import compare, variant_stats

    log(store, "champion", labelled(400, 0.8), keys=[f"c{i}" for i in range(400)])
    log(store, "challenger", labelled(100, 0.8), keys=[f"t{i}" for i in range(99)] + ["loyal"])
    log(store, "challenger", labelled(300, 1.0), keys=["loyal"] * 300)
    r = report(store, settings((("champion", 0.8), ("challenger", 0.2))))
    challenger = r.variant("challenger")
    assert (challenger.units, challenger.labelled, challenger.metric.n, challenger.metric.rows) == (100, 400, 100, 400)
    assert challenger.metric.mean == pytest.approx(0.95) and challenger.metric.method == "delta"
    assert (r.verdict, r.srm.mismatch, r.challengers[0].primary.better) == ("continue", False, False)
    per_prediction = compare(variant_stats("c", labelled_outcomes(400, 0.8), "proportion"),
                             variant_stats("t", np.r_[labelled_outcomes(100, 0.8), np.ones(300)], "proportion"))  # fmt: skip
    assert per_prediction.better


def labelled_outcomes(n: int, accuracy: float) -> np.ndarray:
    return np.array([float(p == t) for p, t in labelled(n, accuracy)])
