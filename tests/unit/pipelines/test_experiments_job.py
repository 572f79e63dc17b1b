"""The experiment report job on a real SQLite prediction store: verdicts, counts, units, guardrails, the shadow
join, label delay, JSON, and the refusals of `ab promote` (the registry is a stand-in that only resolves)."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from shipml.adapters.registry import ModelRef
from shipml.adapters.store import PredictionRow, PredictionStore
from shipml.config import Settings, settings_from_mapping
from shipml.errors import ConfigError
from shipml.pipelines.experiments import ExperimentJob, ExperimentReport, PromotionRefused
from shipml.pipelines.monitor import Window

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
    s = PredictionStore(f"sqlite:///{tmp_path}/p.db")
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
) -> list[str]:
    """Rows of ``variant``: (predicted, true) per row, feedback recorded for each true that is not None. A
    float prediction makes a regression row."""
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
        rows.append(
            PredictionRow(
                pid, now - age_s + i * 1e-3, "churn", "1", variant, {}, outputs, 1.0, role, key, status=status
            )
        )
    store.write(rows)
    for pid, (_, truth) in zip(ids, pairs, strict=True):
        if truth is not None:
            store.add_feedback(
                pid, None if isinstance(truth, float) else str(truth), truth if isinstance(truth, float) else None
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
    assert (r.verdict, r.reasons) == ("continue", ("variant champion has 50 observations, under the minimum 100",))


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
    (guardrail,) = r.challengers[0].guardrails
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
    assert json.loads(text)["challengers"][0]["guardrails"][0]["status"] == "holds"


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
